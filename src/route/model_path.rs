//! The model name in a KServe inference path, for model-path routing: one shared gateway
//! host in front of many InferenceServices. Paths are only read, never rewritten.

/// The model of `/v1/models/<m>:predict` or `:explain`, or of `/v2/models/<m>` with an
/// optional `/versions/<v>` and `/infer` or `/ready` (none: metadata). Query strings are
/// ignored; anything else is `None`.
pub fn model_from_path(path: &str) -> Option<&str> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if let Some(rest) = path.strip_prefix("/v1/models/") {
        let (model, verb) = rest.rsplit_once(':')?;
        return (matches!(verb, "predict" | "explain") && valid(model)).then_some(model);
    }
    let rest = path.strip_prefix("/v2/models/")?;
    let (model, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let tail = match tail.strip_prefix("versions/") {
        Some(versioned) => {
            let (version, after) = versioned.split_once('/').unwrap_or((versioned, ""));
            if !valid(version) {
                return None;
            }
            after
        }
        None => tail,
    };
    (matches!(tail, "" | "infer" | "ready") && valid(model)).then_some(model)
}

/// A model (or version) name as it can appear in a path segment: starts with a letter or
/// digit (so never `.` or `..`), then letters, digits, `-`, `_`, `.`.
pub fn valid(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kserve_paths() {
        assert_eq!(
            model_from_path("/v1/models/sklearn-iris:predict"),
            Some("sklearn-iris")
        );
        assert_eq!(
            model_from_path("/v1/models/sklearn-iris:explain?x=1"),
            Some("sklearn-iris")
        );
        assert_eq!(model_from_path("/v2/models/bert/infer"), Some("bert"));
        assert_eq!(model_from_path("/v2/models/bert/ready"), Some("bert"));
        assert_eq!(model_from_path("/v2/models/bert"), Some("bert"));
        assert_eq!(
            model_from_path("/v2/models/bert/versions/2/infer"),
            Some("bert")
        );
        assert_eq!(
            model_from_path("/v2/models/bert/versions/v1.2"),
            Some("bert")
        );
    }

    #[test]
    fn other_paths() {
        for path in [
            "/",
            "/v1/models/iris",
            "/v1/models/iris:delete",
            "/v1/models/:predict",
            "/v1/models/a/b:predict",
            "/v2/models/",
            "/v2/models/bert/metadata",
            "/v2/models/bert/versions//infer",
            "/v2/models/bert/infer/x",
            "/v3/models/bert/infer",
            "/v2/models/../infer",
            "v1/models/iris:predict",
            "/v2/health/ready",
        ] {
            assert_eq!(model_from_path(path), None, "{path}");
        }
        assert_eq!(model_from_path("/v2/models/..%2F/infer"), None);
    }
}
