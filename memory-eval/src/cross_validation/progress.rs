//! Runs done out of runs in all, told to the caller as they go ([`Progress`]).

/// Runs done out of runs in all, told to the caller at the start and after each run.
pub(crate) struct Progress<'a> {
    done: usize,
    total: usize,
    tell: &'a mut dyn FnMut(usize, usize),
}

impl<'a> Progress<'a> {
    /// No run done of `total`, told to `tell` at once.
    pub(crate) fn start(total: usize, tell: &'a mut dyn FnMut(usize, usize)) -> Self {
        tell(0, total);
        Progress {
            done: 0,
            total,
            tell,
        }
    }

    /// One more run done.
    pub(crate) fn step(&mut self) {
        self.done += 1;
        (self.tell)(self.done, self.total);
    }
}
