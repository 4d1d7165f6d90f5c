//! Slot selections: which state rows a batched call addresses.
//!
//! A call names `n` rows. Either the rows are the dense range `0..n`
//! (`Slots::Dense`), or row `i` addresses slot `list[i]`; a negative entry
//! is a padding row whose state is not touched. A slot named twice in one
//! call is an error, so every selected state is written at most once.

use crate::error::{Error, Result};

/// The slot argument of a batched call, before validation.
#[derive(Clone, Copy, Debug)]
pub enum Slots<'a> {
    /// Rows `0..n` address slots `0..n`.
    Dense(usize),
    /// Row `i` addresses slot `list[i]`; negative entries are padding.
    List(&'a [i32]),
}

/// A validated selection: every slot in range, none repeated.
#[derive(Clone, Copy, Debug)]
pub struct Selection<'a> {
    slots: Slots<'a>,
}

/// Up to this many rows, duplicates are found by comparing pairs (no
/// allocation); above it, by sorting a copy of the list.
const PAIRWISE_MAX: usize = 64;

impl<'a> Slots<'a> {
    /// Checks the selection against a cache of `num_slots` slots.
    pub fn validate(self, num_slots: usize) -> Result<Selection<'a>> {
        self.validate_named(num_slots, "slots")
    }

    /// As `validate`, naming the argument `name` in messages.
    pub fn validate_named(self, num_slots: usize, name: &str) -> Result<Selection<'a>> {
        match self {
            Slots::Dense(n) => {
                if n > num_slots {
                    return Err(Error::OutOfRange(format!(
                        "n = {n} rows with slots = NULL, but the cache has {num_slots} slots"
                    )));
                }
            }
            Slots::List(list) => {
                for (i, &s) in list.iter().enumerate() {
                    if s >= 0 && s as usize >= num_slots {
                        return Err(Error::OutOfRange(format!(
                            "{name}[{i}] = {s} is out of range (num_slots = {num_slots})"
                        )));
                    }
                }
                if list.len() <= PAIRWISE_MAX {
                    for i in 0..list.len() {
                        if list[i] >= 0 {
                            if let Some(j) = list[..i].iter().position(|&t| t == list[i]) {
                                return Err(duplicate(name, j, i, list[i]));
                            }
                        }
                    }
                } else {
                    // Sort a copy of the real slots: O(n log n) in the
                    // rows of the call, whatever the cache's slot count.
                    let mut sorted: Vec<(i32, usize)> = Vec::new();
                    sorted.try_reserve_exact(list.len()).map_err(|_| Error::OutOfMemory("slot list copy".into()))?;
                    sorted.extend(list.iter().enumerate().filter(|(_, &s)| s >= 0).map(|(i, &s)| (s, i)));
                    sorted.sort_unstable();
                    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
                        return Err(duplicate(name, w[0].1, w[1].1, w[0].0));
                    }
                }
            }
        }
        Ok(Selection { slots: self })
    }
}

fn duplicate(name: &str, j: usize, i: usize, s: i32) -> Error {
    Error::InvalidArg(format!("slot {s} is listed twice ({name}[{j}] and {name}[{i}])"))
}

impl<'a> Selection<'a> {
    /// Rows in the call, padding included.
    pub fn rows(&self) -> usize {
        match self.slots {
            Slots::Dense(n) => n,
            Slots::List(l) => l.len(),
        }
    }

    /// The slot row `row` addresses; `None` for padding.
    #[inline]
    pub fn slot(&self, row: usize) -> Option<usize> {
        match self.slots {
            Slots::Dense(_) => Some(row),
            Slots::List(l) => usize::try_from(l[row]).ok(),
        }
    }

    /// `(row, slot)` for every non-padding row, in row order.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.rows()).filter_map(move |r| self.slot(r).map(|s| (r, s)))
    }

    /// Number of non-padding rows.
    pub fn active(&self) -> usize {
        match self.slots {
            Slots::Dense(n) => n,
            Slots::List(l) => l.iter().filter(|&&s| s >= 0).count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_larger_than_cache_is_out_of_range() {
        assert!(Slots::Dense(4).validate(4).is_ok());
        assert!(matches!(Slots::Dense(5).validate(4), Err(Error::OutOfRange(_))));
    }

    #[test]
    fn duplicates_are_found_by_both_strategies_and_named() {
        let small = [0, -1, 2, -1, 2];
        assert!(matches!(Slots::List(&small).validate(3), Err(Error::InvalidArg(_))));
        let mut big: Vec<i32> = (0..200).collect();
        assert!(Slots::List(&big).validate(200).is_ok());
        big[150] = 7;
        assert!(matches!(Slots::List(&big).validate(200), Err(Error::InvalidArg(_))));
        // Padding may repeat.
        let pad = vec![-1; 100];
        assert!(Slots::List(&pad).validate(1).is_ok());
    }
}
