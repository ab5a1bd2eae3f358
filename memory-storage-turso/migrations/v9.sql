-- Version 9: learned items indexed by their context. A recommendation reads the items of one
-- context (a domain, and maybe a language and a task type), most-seen first. Until now the
-- only way in was the counter index (`patterns_by_occurrences` and the like), walked from the
-- most-seen item of the whole namespace with a table lookup per entry until enough items of
-- the context were found: every item of the namespace when the context holds few, ~250 ms at
-- 90,000 patterns. These indexes seek the context's items directly and sort only those.
--
-- An unset context field is NULL and matches any query value. The indexed expression maps it
-- to an empty blob, which no stored text equals, so a query asks for `IN (x'', ?)`: the
-- item's own value or "unset", both seekable. The context columns never change once a row is
-- written (an update leaves them out), so an upsert of an existing item does not touch these
-- indexes.

CREATE INDEX patterns_by_context ON patterns
    (ns, IFNULL(domain, x''), IFNULL(language, x''), IFNULL(task_type, x''));
CREATE INDEX heuristics_by_context ON heuristics
    (ns, IFNULL(domain, x''), IFNULL(language, x''), IFNULL(task_type, x''));
CREATE INDEX lessons_by_context ON lessons
    (ns, IFNULL(domain, x''), IFNULL(language, x''), IFNULL(task_type, x''));
