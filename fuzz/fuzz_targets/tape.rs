//! The fuzz input read as a tape of decisions; once it runs out, every
//! decision takes its default. Shared by the targets that drive a state
//! machine (`#[path = "tape.rs"] mod tape;`).

pub struct Tape<'a>(pub &'a [u8]);

#[allow(dead_code)] // not every target takes whole slices
impl Tape<'_> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    pub fn u8_or(&mut self, d: u8) -> u8 {
        self.byte().unwrap_or(d)
    }
    /// Up to `n` bytes (fewer where the tape ends).
    pub fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}
