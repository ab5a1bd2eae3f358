//! Converters from public long-term conversation benchmarks to the retrieval evaluation's
//! format ([`crate::retrieval`]), so the retrieval is measured on text people wrote elsewhere.
//!
//! Both benchmarks converted here record dialogues between two people over weeks, split into
//! dated sittings, with questions whose evidence labels name the turns that answer them:
//!
//! - LoCoMo (10 dialogues, 272 sittings; its `locomo10.json`, a list of samples with a
//!   `conversation` object and a `qa` list, or the same data as one file per dialogue);
//! - REALTALK (10 real messaging-app dialogues over 21 days, 219 sittings; one file per
//!   dialogue, turns in `clean_text`).
//!
//! Their data stays out of this repository (see `eval/real/README.md` for how to get it).
//! [`convert_dialogues`] reads a file or a directory of `.json` files and writes one dataset
//! directory per dialogue (`episodes.jsonl`, `queries.jsonl`), since each dialogue is its own
//! memory: a question about one couple is never asked of another's sittings.
//!
//! The mapping, one episode per sitting:
//! - the task is `Conversation N between A and B, <date>` (type `other`, domain
//!   `conversation`): what an agent would record about a sitting before it happens;
//! - each turn is a step: tool `message`, action `Speaker: text` (a shared photo's caption
//!   appended in brackets), cut at the step action's limit on a character boundary;
//! - a question becomes a query labeled with the sittings its evidence turns are in
//!   (grade 1 each). LoCoMo's category 5 (adversarial questions, whose premise is false) is
//!   left out, as are questions whose evidence names no sitting of the dialogue.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use memory_core::{Error, Limits, Result};

/// Question categories left out by default: LoCoMo's adversarial questions (category 5).
pub const SKIPPED_CATEGORIES: &[u64] = &[5];

/// What a conversion wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConversionSummary {
    /// The dialogues, one dataset directory each, in the order written.
    pub dialogues: Vec<DialogueSummary>,
    /// Sittings (episodes) in all.
    pub episodes: usize,
    /// Questions (queries) in all.
    pub queries: usize,
    /// Questions left out because of their category.
    pub skipped_category: usize,
    /// Questions left out because no evidence turn names a sitting of the dialogue.
    pub skipped_no_evidence: usize,
    /// Turn texts cut at the step action's limit.
    pub cut_turns: usize,
}

/// One converted dialogue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DialogueSummary {
    /// Its directory name under the output directory.
    pub name: String,
    /// Sittings.
    pub episodes: usize,
    /// Questions kept.
    pub queries: usize,
}

/// Converts every dialogue in `input` (a `.json` file, or a directory of them, read in name
/// order) into one dataset directory each under `out`, which must not exist yet or be
/// empty. `skip_categories` are question categories to leave out ([`SKIPPED_CATEGORIES`] by
/// default).
///
/// # Errors
/// An unreadable or malformed input, a dialogue without sittings, two dialogues of the same
/// name, an output directory that holds files already, or a write failure.
///
/// # Example
/// ```
/// # fn main() -> memory_core::Result<()> {
/// let dir = std::env::temp_dir().join(format!("convert-doc-{}", std::process::id()));
/// let _ = std::fs::remove_dir_all(&dir);
/// std::fs::create_dir_all(&dir).unwrap();
/// let input = dir.join("chat.json");
/// std::fs::write(&input, r#"{
///   "session_1_date_time": "8 May 2023",
///   "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "I adopted a cat"},
///                 {"speaker": "Bo", "dia_id": "D1:2", "text": "Lovely!"}],
///   "qa": [{"question": "What pet did Ann adopt?", "evidence": ["D1:1"], "category": 1}]
/// }"#).unwrap();
/// let summary = memory_eval::convert::convert_dialogues(
///     &input, &dir.join("out"), memory_eval::convert::SKIPPED_CATEGORIES)?;
/// assert_eq!((summary.episodes, summary.queries), (1, 1));
/// let ds = memory_eval::retrieval::EvalDataset::load(&dir.join("out/chat"))?;
/// assert_eq!(ds.episodes[0].steps[0].action, "Ann: I adopted a cat");
/// assert_eq!(ds.queries[0].relevant.get("D1"), Some(&1));
/// # let _ = std::fs::remove_dir_all(&dir);
/// # Ok(())
/// # }
/// ```
pub fn convert_dialogues(
    input: &Path,
    out: &Path,
    skip_categories: &[u64],
) -> Result<ConversionSummary> {
    let files = input_files(input)?;
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| io_error(out, &e))?;
        if entries.next().is_some() {
            return Err(Error::invalid(
                "out",
                format!("{} exists and is not empty", out.display()),
            ));
        }
    }
    let mut summary = ConversionSummary::default();
    let limits = Limits::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| io_error(&file, &e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid("input", format!("{}: {e}", file.display())))?;
        let stem = file.file_stem().map_or_else(
            || "dialogue".to_owned(),
            |s| s.to_string_lossy().into_owned(),
        );
        let dialogues: Vec<(String, &Value)> = match &value {
            Value::Array(samples) => samples
                .iter()
                .enumerate()
                .map(|(i, sample)| {
                    let name = sample
                        .get("sample_id")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("{stem}-{}", i + 1), str::to_owned);
                    (name, sample)
                })
                .collect(),
            Value::Object(_) => vec![(stem, &value)],
            _ => {
                return Err(Error::invalid(
                    "input",
                    format!("{}: neither a dialogue nor a list of them", file.display()),
                ));
            }
        };
        for (name, dialogue) in dialogues {
            let name = directory_name(&name);
            if summary.dialogues.iter().any(|d| d.name == name) {
                return Err(Error::invalid(
                    "input",
                    format!("two dialogues are named {name}"),
                ));
            }
            let converted = convert_one(dialogue, skip_categories, &limits)
                .map_err(|e| Error::invalid("input", format!("{}: {name}: {e}", file.display())))?;
            let dir = out.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, &e))?;
            write_lines(&dir.join("episodes.jsonl"), &converted.episodes)?;
            write_lines(&dir.join("queries.jsonl"), &converted.queries)?;
            summary.episodes += converted.episodes.len();
            summary.queries += converted.queries.len();
            summary.skipped_category += converted.skipped_category;
            summary.skipped_no_evidence += converted.skipped_no_evidence;
            summary.cut_turns += converted.cut_turns;
            summary.dialogues.push(DialogueSummary {
                name,
                episodes: converted.episodes.len(),
                queries: converted.queries.len(),
            });
        }
    }
    if summary.dialogues.is_empty() {
        return Err(Error::invalid(
            "input",
            format!("no dialogue found in {}", input.display()),
        ));
    }
    Ok(summary)
}

/// The `.json` files of `input`, in name order.
fn input_files(input: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(input).map_err(|e| io_error(input, &e))?;
    if meta.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| io_error(input, &e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

fn io_error(path: &Path, e: &std::io::Error) -> Error {
    Error::invalid("path", format!("{}: {e}", path.display()))
}

/// Letters, digits, `-` and `_` of `name`, others as `_`.
fn directory_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "dialogue".to_owned()
    } else {
        cleaned
    }
}

fn write_lines(path: &Path, rows: &[Value]) -> Result<()> {
    let mut text = String::new();
    for row in rows {
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| io_error(path, &e))
}

/// One dialogue in the evaluation's format.
struct Converted {
    episodes: Vec<Value>,
    queries: Vec<Value>,
    skipped_category: usize,
    skipped_no_evidence: usize,
    cut_turns: usize,
}

/// The number of a `session_N` key (not `session_N_date_time` or a summary).
fn session_number(key: &str) -> Option<u32> {
    key.strip_prefix("session_")?.parse().ok()
}

/// One dialogue (a LoCoMo sample, or a per-dialogue file of LoCoMo or REALTALK) in the
/// evaluation's format.
fn convert_one(dialogue: &Value, skip_categories: &[u64], limits: &Limits) -> Result<Converted> {
    // LoCoMo's list format keeps the sittings in `conversation`; the per-dialogue files
    // (LoCoMo's and REALTALK's) at the top.
    let sittings_of: &Map<String, Value> = dialogue
        .get("conversation")
        .unwrap_or(dialogue)
        .as_object()
        .ok_or_else(|| Error::invalid("dialogue", "not an object"))?;
    let sessions = sessions_with_turns(sittings_of);
    if sessions.is_empty() {
        return Err(Error::invalid("dialogue", "has no sittings"));
    }
    let who = speakers(&sessions);
    let mut cut_turns = 0;
    let mut episodes = Vec::with_capacity(sessions.len());
    for (n, turns) in &sessions {
        let date = sittings_of
            .get(&format!("session_{n}_date_time"))
            .and_then(Value::as_str);
        episodes.push(sitting(*n, turns, &who, date, limits, &mut cut_turns));
    }
    let questions = dialogue.get("qa").and_then(Value::as_array);
    let (queries, skipped_category, skipped_no_evidence) =
        convert_questions(questions, &sessions, skip_categories, limits);
    Ok(Converted {
        episodes,
        queries,
        skipped_category,
        skipped_no_evidence,
        cut_turns,
    })
}

/// The sittings of a dialogue that have turns, by number.
fn sessions_with_turns(sittings_of: &Map<String, Value>) -> BTreeMap<u32, &Vec<Value>> {
    let mut sessions: BTreeMap<u32, &Vec<Value>> = BTreeMap::new();
    for (key, value) in sittings_of {
        if let (Some(n), Some(turns)) = (session_number(key), value.as_array())
            && !turns.is_empty()
        {
            sessions.insert(n, turns);
        }
    }
    sessions
}

/// The speakers of `sessions` in order of first turn: `A`, `A and B`, `A, B and C`.
fn speakers(sessions: &BTreeMap<u32, &Vec<Value>>) -> String {
    let mut speakers: Vec<String> = Vec::new();
    for turns in sessions.values() {
        for turn in *turns {
            if let Some(s) = turn.get("speaker").and_then(Value::as_str)
                && !speakers.iter().any(|k| k == s)
            {
                speakers.push(s.to_owned());
            }
        }
    }
    match speakers.as_slice() {
        [] => "unnamed speakers".to_owned(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Sitting `n` of a dialogue between `who`, held on `date`, as an episode: one step per turn
/// (at most the step limit), each cut at the action limit (counted in `cut_turns`).
fn sitting(
    n: u32,
    turns: &[Value],
    who: &str,
    date: Option<&str>,
    limits: &Limits,
    cut_turns: &mut usize,
) -> Value {
    let mut task = format!("Conversation {n} between {who}");
    if let Some(date) = date.filter(|d| !d.trim().is_empty()) {
        let _ = write!(task, ", {}", date.trim());
    }
    let task = cut(&task, limits.max_description_bytes).0;
    let mut steps = Vec::with_capacity(turns.len());
    for turn in turns.iter().take(limits.max_steps_per_episode) {
        let (step, was_cut) = turn_step(turn, limits);
        *cut_turns += usize::from(was_cut);
        steps.push(step);
    }
    json!({
        "id": format!("D{n}"),
        "task_description": task,
        "task_type": "other",
        "context": {"domain": "conversation"},
        "steps": steps,
        "outcome": {"type": "success", "verdict": "the conversation ended"},
    })
}

/// One turn as a `message` step (`Speaker: text`, a shared photo's caption in brackets), and
/// whether its text was cut.
fn turn_step(turn: &Value, limits: &Limits) -> (Value, bool) {
    let text = turn
        .get("text")
        .or_else(|| turn.get("clean_text"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    let speaker = turn
        .get("speaker")
        .and_then(Value::as_str)
        .unwrap_or("someone");
    let mut action = format!("{speaker}: {text}");
    if let Some(caption) = turn
        .get("blip_caption")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
    {
        let _ = write!(action, " [shares {}]", caption.trim());
    }
    let (action, was_cut) = cut(&action, limits.max_action_bytes);
    let turn_id = turn.get("dia_id").and_then(Value::as_str).unwrap_or("");
    let step = json!({
        "tool": "message",
        "action": action,
        "parameters": {"turn": turn_id},
        "result": {"status": "success", "output": ""},
        "latency_ms": 0,
    });
    (step, was_cut)
}

/// The questions `qa` as queries labeled with the sittings of their evidence among
/// `sessions`; with the questions left out for their category, and for naming no sitting.
fn convert_questions(
    qa: Option<&Vec<Value>>,
    sessions: &BTreeMap<u32, &Vec<Value>>,
    skip_categories: &[u64],
    limits: &Limits,
) -> (Vec<Value>, usize, usize) {
    let mut queries = Vec::new();
    let (mut skipped_category, mut skipped_no_evidence) = (0, 0);
    for (i, q) in qa.into_iter().flatten().enumerate() {
        if q.get("category")
            .and_then(Value::as_u64)
            .is_some_and(|c| skip_categories.contains(&c))
        {
            skipped_category += 1;
            continue;
        }
        let question = q
            .get("question")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        let mut relevant: BTreeMap<String, u32> = BTreeMap::new();
        for evidence in q
            .get("evidence")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            for n in evidence_sessions(evidence) {
                if sessions.contains_key(&n) {
                    relevant.insert(format!("D{n}"), 1);
                }
            }
        }
        if question.is_empty() || relevant.is_empty() {
            skipped_no_evidence += 1;
            continue;
        }
        queries.push(json!({
            "id": format!("Q{}", i + 1),
            "task_description": cut(question, limits.max_description_bytes).0,
            "context": {"domain": "conversation"},
            "task_type": "other",
            "relevant": relevant,
        }));
    }
    (queries, skipped_category, skipped_no_evidence)
}

/// The sitting numbers an evidence label names: `D<sitting>:<turn>`, possibly several in one
/// string (`D8:6; D9:17`), with a stray colon or space after the `D` tolerated (`D:11:26`,
/// `D 2:18`).
fn evidence_sessions(label: &str) -> Vec<u32> {
    let bytes = label.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'D' {
            let mut j = i + 1;
            while j < bytes.len() && (bytes[j] == b':' || bytes[j] == b' ') && j <= i + 2 {
                j += 1;
            }
            let start = j;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            if j > start
                && j < bytes.len()
                && bytes[j] == b':'
                && let Ok(n) = label[start..j].parse::<u32>()
                && !out.contains(&n)
            {
                out.push(n);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// `text` cut to at most `max` bytes on a character boundary, and whether it was cut.
fn cut(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_owned(), false);
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::EvalDataset;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("memory-convert-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn evidence_labels_name_their_sittings() {
        assert_eq!(evidence_sessions("D1:3"), vec![1]);
        assert_eq!(evidence_sessions("D8:6; D9:17"), vec![8, 9]);
        assert_eq!(evidence_sessions("D:11:26"), vec![11]);
        assert_eq!(evidence_sessions("D 2:18"), vec![2]);
        assert_eq!(evidence_sessions("D10:2 D10:4"), vec![10]);
        assert!(evidence_sessions("D").is_empty());
        assert!(evidence_sessions("D12").is_empty());
        assert!(evidence_sessions("").is_empty());
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("héllo", 2), ("h".to_owned(), true));
        assert_eq!(cut("héllo", 3), ("hé".to_owned(), true));
        assert_eq!(cut("abc", 3), ("abc".to_owned(), false));
    }

    /// The list layout (LoCoMo's `locomo10.json`) and the per-dialogue layout (REALTALK's
    /// files, turns in `clean_text`) give the same kind of datasets.
    #[test]
    fn both_layouts_convert_into_one_dataset_per_dialogue() -> Result<()> {
        let dir = temp("layouts");
        let list = json!([{
            "sample_id": "conv-1",
            "conversation": {
                "speaker_a": "Ann", "speaker_b": "Bo",
                "session_1_date_time": "1:56 pm on 8 May, 2023",
                "session_1": [
                    {"speaker": "Ann", "dia_id": "D1:1", "text": "I adopted a cat"},
                    {"speaker": "Bo", "dia_id": "D1:2", "text": "Lovely!",
                     "blip_caption": "a photo of a cat"}
                ],
                "session_2_date_time": "2 June 2023",
                "session_2": [{"speaker": "Bo", "dia_id": "D2:1", "text": "x".repeat(2_500)}],
                "session_3": []
            },
            "qa": [
                {"question": "What pet did Ann adopt?", "evidence": ["D1:1"], "category": 1},
                {"question": "Where did Bo go?", "evidence": ["D1:2; D2:1"], "category": 2},
                {"question": "What did Ann paint?", "evidence": ["D1:1"], "category": 5},
                {"question": "Who is Cy?", "evidence": ["D7:1"], "category": 1}
            ]
        }]);
        let realtalk = json!({
            "name": {"speaker_1": "Emi", "speaker_2": "Kate"},
            "session_1_date_time": "29.12.2023, 22:42:04",
            "session_1": [
                {"speaker": "Emi", "dia_id": "D1:1", "clean_text": "Skiing in Colorado soon"}
            ],
            "qa": [{"question": "Where does Emi ski?", "evidence": ["D1:1"], "category": 3}]
        });
        std::fs::write(dir.join("a_locomo.json"), list.to_string()).unwrap();
        std::fs::write(dir.join("b_chat.json"), realtalk.to_string()).unwrap();
        let out = dir.join("out");
        let summary = convert_dialogues(&dir, &out, SKIPPED_CATEGORIES)?;
        assert_eq!(summary.dialogues.len(), 2);
        assert_eq!((summary.episodes, summary.queries), (3, 3));
        assert_eq!(
            (
                summary.skipped_category,
                summary.skipped_no_evidence,
                summary.cut_turns
            ),
            (1, 1, 1)
        );

        let conv = EvalDataset::load(&out.join("conv-1"))?;
        assert_eq!(conv.episodes.len(), 2, "the empty sitting is left out");
        let first = &conv.episodes[0];
        assert_eq!(
            first.task_description,
            "Conversation 1 between Ann and Bo, 1:56 pm on 8 May, 2023"
        );
        assert_eq!(
            first.steps[1].action,
            "Bo: Lovely! [shares a photo of a cat]"
        );
        assert_eq!(first.steps[1].parameters["turn"], "D1:2");
        assert_eq!(conv.episodes[1].steps[0].action.len(), 2_000);
        assert_eq!(conv.queries.len(), 2);
        assert_eq!(conv.queries[1].relevant.len(), 2, "{:?}", conv.queries[1]);

        let chat = EvalDataset::load(&out.join("b_chat"))?;
        assert_eq!(
            chat.episodes[0].steps[0].action,
            "Emi: Skiing in Colorado soon"
        );
        assert!(
            chat.episodes[0].task_description.contains("between Emi, "),
            "one speaker"
        );
        assert_eq!(chat.queries[0].id, "Q1");

        // A second conversion into the same directory is refused.
        let err = convert_dialogues(&dir, &out, SKIPPED_CATEGORIES).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn malformed_input_is_a_clear_error() {
        let dir = temp("malformed");
        std::fs::write(dir.join("x.json"), "[1, 2").unwrap();
        let err = convert_dialogues(&dir.join("x.json"), &dir.join("out"), &[]).unwrap_err();
        assert!(err.to_string().contains("x.json"), "{err}");
        std::fs::write(dir.join("y.json"), r#"{"qa": []}"#).unwrap();
        let err = convert_dialogues(&dir.join("y.json"), &dir.join("out"), &[]).unwrap_err();
        assert!(err.to_string().contains("no sittings"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
