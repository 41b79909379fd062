//! `--grid FILE`: the user's own candidate list, TOML or JSON. Errors name the line and field.
//!
//! ```toml
//! [[candidates]]
//! backbone = "efficientnet_lite0"   # default
//! levels = "6-8"                    # or [6, 7, 8]; default: the scorer's
//! scorer = "gaussian"               # gaussian (default), knn or ensemble
//!
//! [[candidates]]
//! scorer = "knn"
//! coreset = 0.1                     # knn only (default 0.1)
//! border = 0                        # knn only (default 1)
//! size = 256                        # or "320x256"; default: the backbone's own
//! aspect = "keep"                   # squash (default) or keep
//!
//! [[candidates]]
//! scorer = "ensemble"               # members as `--member` takes them
//! members = ["knn:6,7@efficientnet_lite0", "knn:6,7@efficientnet_lite1"]
//! coreset = 0.1                     # the knn members' settings (defaults as for knn)
//! ```
//! JSON: `{"candidates": [{"levels": "6-8"}, {"scorer": "knn", "border": 0}]}`.
//!
//! An ensemble's `backbone` is the run's own (default: the first member's); members without
//! `@BACKBONE` use it. Its levels are its members', so `levels` is not taken with it.

use std::path::Path;

use serde::de::Error as _;
use serde::Deserialize;

use super::Candidate;
use crate::backbone::Levels;
use crate::data::image::{Aspect, InputSize};
use crate::error::{Error, Result};
use crate::scorer::{EnsembleParams, KnnParams, MemberSpec, PadimParams, ScorerSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    candidates: Vec<Entry>,
}

/// One candidate as written; checked as a whole by `TryFrom`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawEntry")]
struct Entry(Candidate);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default, deserialize_with = "backbone_field")]
    backbone: Option<String>,
    #[serde(default, deserialize_with = "levels_field")]
    levels: Option<Levels>,
    #[serde(default, deserialize_with = "scorer_field")]
    scorer: Option<String>,
    #[serde(default, deserialize_with = "coreset_field")]
    coreset: Option<f64>,
    #[serde(default, deserialize_with = "border_field")]
    border: Option<usize>,
    #[serde(default, deserialize_with = "size_field")]
    size: Option<InputSize>,
    #[serde(default, deserialize_with = "aspect_field")]
    aspect: Option<String>,
    #[serde(default, deserialize_with = "members_field")]
    members: Option<Vec<String>>,
}

impl TryFrom<RawEntry> for Entry {
    type Error = String;

    fn try_from(raw: RawEntry) -> std::result::Result<Self, String> {
        let knn_given = raw.coreset.is_some() || raw.border.is_some();
        let defaults = KnnParams::default();
        let knn = KnnParams {
            coreset: raw.coreset.unwrap_or(defaults.coreset),
            border: raw.border.unwrap_or(defaults.border),
            seed: 0,
        };
        let scorer_name = raw.scorer.as_deref().unwrap_or("gaussian");
        if raw.members.is_some() && scorer_name != "ensemble" {
            return Err("members: apply to scorer \"ensemble\" only".into());
        }
        let mut backbone = raw.backbone;
        let scorer = match scorer_name {
            "gaussian" if knn_given => {
                return Err("coreset/border: apply to scorer \"knn\" or \"ensemble\" only".into());
            }
            "gaussian" => ScorerSpec::Gaussian,
            "knn" => ScorerSpec::Knn(knn),
            "padim" if raw.coreset.is_some() => {
                return Err("coreset: applies to scorer \"knn\" or \"ensemble\" only".into());
            }
            "padim" => ScorerSpec::Padim(PadimParams { border: knn.border }),
            "ensemble" => {
                if raw.levels.is_some() {
                    return Err("levels: an ensemble's members carry their own \
                                (\"knn:6,7@efficientnet_lite1\")"
                        .into());
                }
                let texts = raw.members.as_deref().unwrap_or_default();
                if texts.is_empty() {
                    return Err("members: an ensemble needs at least one member".into());
                }
                // Members without `@BACKBONE` take the candidate's backbone; without one, the
                // first member's (itself the default when it names none).
                let parse = |text: &String, backbone: &str| {
                    MemberSpec::parse(text, &knn, backbone)
                        .map_err(|e| format!("members: {}", problem(&e)))
                };
                let run_backbone = match backbone {
                    Some(given) => given,
                    None => parse(&texts[0], DEFAULT_BACKBONE)?.backbone,
                };
                let members = texts
                    .iter()
                    .map(|text| parse(text, &run_backbone))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let params = EnsembleParams::new(members);
                params.check().map_err(|e| format!("members: {}", problem(&e)))?;
                backbone = Some(run_backbone);
                ScorerSpec::Ensemble(params)
            }
            other => {
                return Err(format!(
                    "scorer: '{other}' is not one of gaussian, knn, padim, ensemble"
                ))
            }
        };
        let aspect = match raw.aspect.as_deref().unwrap_or("squash") {
            "squash" => Aspect::Squash,
            "keep" => Aspect::Keep,
            other => return Err(format!("aspect: '{other}' is not one of squash, keep")),
        };
        let backbone = backbone.unwrap_or_else(|| DEFAULT_BACKBONE.into());
        if backbone.is_empty() {
            return Err("backbone: empty name".into());
        }
        let levels = raw.levels.unwrap_or_else(|| scorer.default_levels());
        Ok(Entry(Candidate { backbone, levels, size: raw.size, aspect, scorer }))
    }
}

/// The backbone of a candidate that names none.
const DEFAULT_BACKBONE: &str = "efficientnet_lite0";

fn levels_field<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Levels>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    let parsed = match &value {
        serde_json::Value::String(text) => text.parse::<Levels>().map_err(|e| problem(&e)),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| v.as_u64().and_then(|l| u8::try_from(l).ok()).ok_or("not a level number"))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(String::from)
            .and_then(|l| Levels::new(l).map_err(|e| problem(&e))),
        _ => Err("expected \"6-8\", \"6,7,8\" or [6, 7, 8]".into()),
    };
    parsed.map(Some).map_err(|e| D::Error::custom(format!("levels: {e}")))
}

fn coreset_field<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<f64>, D::Error> {
    let value = f64::deserialize(d).map_err(|e| D::Error::custom(format!("coreset: {e}")))?;
    if !(value > 0.0 && value <= 1.0) {
        return Err(D::Error::custom(format!(
            "coreset: {value} is outside (0, 1]: the share of positions kept"
        )));
    }
    Ok(Some(value))
}

fn size_field<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<InputSize>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    let text = match &value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(D::Error::custom("size: expected 224 or \"320x256\"")),
    };
    text.parse::<InputSize>()
        .map(Some)
        .map_err(|e| D::Error::custom(format!("size: {}", problem(&e))))
}

/// A value of type `T`, its errors prefixed with the field's name.
fn named<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    field: &str,
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some).map_err(|e| D::Error::custom(format!("{field}: {e}")))
}

fn backbone_field<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    named("backbone", d)
}

fn scorer_field<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    one_of("scorer", &["gaussian", "knn", "padim", "ensemble"], d)
}

fn members_field<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    named("members", d)
}

/// A string field that must be one of `allowed` (checked here, so errors carry its line).
fn one_of<'de, D: serde::Deserializer<'de>>(
    field: &str,
    allowed: &[&str],
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    let value: Option<String> = named(field, d)?;
    match value {
        Some(text) if !allowed.contains(&text.as_str()) => {
            Err(D::Error::custom(format!("{field}: '{text}' is not one of {}", allowed.join(", "))))
        }
        other => Ok(other),
    }
}

fn border_field<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<usize>, D::Error> {
    named("border", d)
}

fn aspect_field<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    one_of("aspect", &["squash", "keep"], d)
}

/// The problem of a parameter error, without the flag name it was made for.
fn problem(error: &Error) -> String {
    match error {
        Error::InvalidParam { problem, .. } => problem.clone(),
        other => other.to_string(),
    }
}

/// Reads a grid file (`.toml` or `.json`).
pub fn read_grid(path: &Path) -> Result<Vec<Candidate>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if text.trim().is_empty() {
        return Err(Error::input(
            path,
            "line 1: empty grid file; list candidates under `candidates` (see README, tune)",
        ));
    }
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    let parsed: std::result::Result<GridFile, String> = match extension.as_deref() {
        Some("toml") => toml::from_str::<GridFile>(&text).map_err(|e| {
            let line = e.span().map_or(1, |span| line_of(&text, span.start));
            format!("line {line}: {}", e.message().trim().replace('\n', "; "))
        }),
        Some("json") => serde_json::from_str::<GridFile>(&text).map_err(|e| {
            let message = e.to_string();
            let message = message.rfind(" at line ").map_or(message.as_str(), |at| &message[..at]);
            format!("line {}, column {}: {message}", e.line(), e.column())
        }),
        _ => return Err(Error::input(path, "a grid file must end in .toml or .json")),
    };
    let grid = parsed.map_err(|problem| Error::input(path, problem))?;
    if grid.candidates.is_empty() {
        return Err(Error::input(path, "candidates: the list is empty"));
    }
    Ok(grid.candidates.into_iter().map(|Entry(c)| c).collect())
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, text: &str) -> Result<Vec<Candidate>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        read_grid(&path)
    }

    #[test]
    fn toml_and_json_give_the_same_candidates() {
        let toml = "[[candidates]]\nlevels = \"6-8\"\n\n[[candidates]]\nscorer = \"knn\"\nborder = 0\nsize = 128\naspect = \"keep\"\n";
        let json = r#"{"candidates": [{"levels": [6, 7, 8]}, {"scorer": "knn", "border": 0, "size": "128", "aspect": "keep"}]}"#;
        let (a, b) = (read("g.toml", toml).unwrap(), read("g.json", json).unwrap());
        assert_eq!(a, b);
        assert_eq!(a[0].levels.to_string(), "6,7,8");
        assert_eq!(a[0].scorer, ScorerSpec::Gaussian);
        assert_eq!(a[1].levels.to_string(), "6,7");
        assert_eq!(a[1].scorer, ScorerSpec::Knn(KnnParams { coreset: 0.1, border: 0, seed: 0 }));
        assert_eq!(a[1].aspect, Aspect::Keep);
    }

    #[test]
    fn padim_candidates_take_a_border_and_no_coreset() {
        let toml = "[[candidates]]\nscorer = \"padim\"\nborder = 0\n\n[[candidates]]\nscorer = \"ensemble\"\nmembers = [\"padim:6,7@efficientnet_lite2\"]\n";
        let read_back = read("g.toml", toml).unwrap();
        assert_eq!(read_back[0].scorer, ScorerSpec::Padim(PadimParams { border: 0 }));
        // padim's own default levels, not knn's.
        assert_eq!(read_back[0].levels.to_string(), "5,6,7");
        assert!(read_back[0].fit_flags().join(" ").ends_with("--scorer padim --border 0"));
        let ScorerSpec::Ensemble(params) = &read_back[1].scorer else { panic!("an ensemble") };
        assert_eq!(params.members[0].scorer, ScorerSpec::Padim(PadimParams::default()));
        let error = read("g.toml", "[[candidates]]\nscorer = \"padim\"\ncoreset = 0.5\n");
        let error = error.unwrap_err().to_string();
        assert!(error.contains("line 1") && error.contains("coreset"), "{error}");
    }

    #[test]
    fn an_ensemble_candidate_takes_members_as_member_does() {
        let toml = "[[candidates]]\nscorer = \"ensemble\"\nmembers = [\"knn:6,7@efficientnet_lite1\", \"gaussian:6-8\"]\nborder = 0\n";
        let json = r#"{"candidates": [{"scorer": "ensemble", "members": ["knn:6,7@efficientnet_lite1", "gaussian:6-8"], "border": 0}]}"#;
        let (a, b) = (read("g.toml", toml).unwrap(), read("g.json", json).unwrap());
        assert_eq!(a, b);
        // The run's backbone is the first member's; members without one take it.
        assert_eq!(a[0].backbone, "efficientnet_lite1");
        assert_eq!(a[0].backbones(), vec!["efficientnet_lite1"]);
        let ScorerSpec::Ensemble(params) = &a[0].scorer else { panic!("{:?}", a[0].scorer) };
        let knn = ScorerSpec::Knn(KnnParams { coreset: 0.1, border: 0, seed: 0 });
        assert_eq!(params.members[0].scorer, knn);
        assert_eq!(params.members[1].backbone, "efficientnet_lite1");
        assert_eq!(params.members[1].levels.to_string(), "6,7,8");
        assert_eq!(a[0].levels.to_string(), "6,7");
        // An explicit backbone is the members' default.
        let named = "[[candidates]]\nscorer = \"ensemble\"\nbackbone = \"efficientnet_lite2\"\nmembers = [\"knn\", \"knn@efficientnet_lite0\"]\n";
        let named = read("g.toml", named).unwrap();
        assert_eq!(named[0].backbones(), vec!["efficientnet_lite2", "efficientnet_lite0"]);
        assert!(named[0].label().starts_with("ensemble[efficientnet_lite2 L6,7 knn"));
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            (
                "g.toml",
                "[[candidates]]\nlevels = \"6-8\"\n\n[[candidates]]\nlevels = \"6-12\"\n",
                "line 5",
                "levels",
            ),
            ("g.toml", "[[candidates]]\nscorer = \"knn\"\ncoreset = 1.5\n", "line 3", "coreset"),
            ("g.toml", "[[candidates]]\nlevles = \"7\"\n", "line 2", "levles"),
            ("g.toml", "[[candidates]\n", "line 1", ""),
            ("g.json", "{\"candidates\": [\n  {\"scorer\": \"svm\"}\n]}", "line 2", "scorer"),
            (
                "g.json",
                "{\"candidates\": [\n  {\"levels\": \"6-8\"},\n  {\"size\": true}\n]}",
                "line 3",
                "size",
            ),
            ("g.json", "   \n", "line 1", "empty grid file"),
            ("g.toml", "[[candidates]]\nmembers = [\"knn\"]\n", "line 1", "members"),
            ("g.toml", "[[candidates]]\nscorer = \"ensemble\"\n", "line 1", "members"),
            (
                "g.toml",
                "[[candidates]]\nscorer = \"ensemble\"\nmembers = []\n",
                "line 1",
                "at least one member",
            ),
            (
                "g.toml",
                "[[candidates]]\nscorer = \"ensemble\"\nmembers = [\"svm:7\"]\n",
                "line 1",
                "svm",
            ),
            (
                "g.toml",
                "[[candidates]]\nscorer = \"ensemble\"\nlevels = \"7\"\nmembers = [\"knn\"]\n",
                "line 1",
                "levels",
            ),
            (
                "g.toml",
                "[[candidates]]\nscorer = \"ensemble\"\nmembers = \"knn\"\n",
                "line 3",
                "members",
            ),
            ("g.json", "{\"candidates\": []}", "candidates", "empty"),
            ("g.yaml", "candidates: []", "toml or .json", ""),
        ];
        for (name, text, line, field) in cases {
            let message = read(name, text).unwrap_err().to_string();
            assert!(message.contains(line), "{name} {text:?}: {message}");
            assert!(message.contains(field), "{name} {text:?}: {message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
