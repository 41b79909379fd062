//! Level selection: levels are numbered 1–9 (1 stem, 2–8 the seven block stages, 9 the conv head).

use crate::error::{Error, Result};

/// The number of levels every anodet backbone has.
pub const LEVEL_COUNT: u8 = 9;

/// A sorted, duplicate-free, non-empty set of levels in 1..=9.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct Levels(Vec<u8>);

impl Levels {
    pub fn new(mut levels: Vec<u8>) -> Result<Self> {
        if levels.is_empty() {
            return Err(Error::param("--levels", "at least one level is needed"));
        }
        if let Some(bad) = levels.iter().find(|&&l| !(1..=LEVEL_COUNT).contains(&l)) {
            return Err(Error::param("--levels", format!("level {bad} is outside 1..=9")));
        }
        levels.sort_unstable();
        levels.dedup();
        Ok(Levels(levels))
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl std::str::FromStr for Levels {
    type Err = Error;

    /// `7`, `6,7,8` or a range `6-8`.
    fn from_str(text: &str) -> Result<Self> {
        let mut levels = Vec::new();
        for part in text.split(',') {
            let parse = |s: &str| {
                s.trim().parse::<u8>().map_err(|_| {
                    Error::param(
                        "--levels",
                        format!("'{text}' is not a level list like 7 or 6,7,8"),
                    )
                })
            };
            match part.split_once('-') {
                Some((low, high)) => levels.extend(parse(low)?..=parse(high)?),
                None => levels.push(parse(part)?),
            }
        }
        Levels::new(levels)
    }
}

impl TryFrom<Vec<u8>> for Levels {
    type Error = Error;
    fn try_from(levels: Vec<u8>) -> Result<Self> {
        Levels::new(levels)
    }
}

impl From<Levels> for Vec<u8> {
    fn from(levels: Levels) -> Vec<u8> {
        levels.0
    }
}

impl std::fmt::Display for Levels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|l| l.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges_sorted() {
        assert_eq!("8,6,7,7".parse::<Levels>().unwrap().as_slice(), &[6, 7, 8]);
        assert_eq!("2-4".parse::<Levels>().unwrap().as_slice(), &[2, 3, 4]);
    }

    #[test]
    fn rejects_out_of_range_empty_and_garbage() {
        assert!("0".parse::<Levels>().is_err());
        assert!("10".parse::<Levels>().is_err());
        assert!("".parse::<Levels>().is_err());
        assert!("seven".parse::<Levels>().is_err());
        assert!(Levels::new(vec![]).is_err());
    }
}
