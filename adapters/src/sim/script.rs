//! What a simulated replica does, read from its shell command, so that the same commands behave
//! alike on local and simulated centers. The command is split into simple commands at `;`,
//! `&`, `|` and newlines; of each, only the first word matters:
//!
//! - `sleep N` — runs N more seconds (fractional allowed); the sleeps add up;
//! - `exit N` — ends with exit code N (mod 256, as in `sh`) at once: later commands never run;
//! - `echo WORDS` — prints the words (quotes are dropped, not interpreted; `$NAME` and
//!   `${NAME}` are replaced by the launch's environment, unknown names by nothing);
//! - anything else is ignored.
//!
//! With neither `sleep` nor `exit`, the runtime is the launch's duration hint or the center's
//! default. Thus `echo hi; sleep 0.2` succeeds after 0.2 s and `exit 3` fails with 3 at once.

/// A command as the simulator reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Script {
    /// Total seconds of `sleep`, when there was one.
    pub runtime_secs: Option<f64>,
    /// The code of the first `exit`, when there was one.
    pub exit_code: Option<i32>,
    /// What the `echo`s print, one line each.
    pub output: Vec<String>,
}

impl Script {
    pub(super) fn parse(command: &str, env: &std::collections::BTreeMap<String, String>) -> Script {
        let mut script = Script::default();
        let mut slept: Option<f64> = None;
        for simple in command.split([';', '&', '|', '\n']) {
            let mut words = simple.split_whitespace();
            match words.next() {
                Some("sleep") => {
                    if let Some(secs) = words.next().and_then(|w| w.parse::<f64>().ok()).filter(|s| s.is_finite()) {
                        slept = Some(slept.unwrap_or(0.0) + secs.max(0.0));
                    }
                }
                Some("exit") => {
                    let code = words.next().and_then(|w| w.parse::<i64>().ok()).unwrap_or(0);
                    script.exit_code = Some(code.rem_euclid(256) as i32);
                    break;
                }
                Some("echo") => {
                    let line: Vec<String> = words.map(|w| expand(&w.replace(['"', '\''], ""), env)).collect();
                    script.output.push(line.join(" "));
                }
                _ => {}
            }
        }
        script.runtime_secs = match (slept, script.exit_code) {
            (None, Some(_)) => Some(0.0),
            (slept, _) => slept,
        };
        script
    }
}

/// Replaces `$NAME` and `${NAME}` in `word` by their values in `env`.
fn expand(word: &str, env: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = match after.strip_prefix('{').and_then(|a| a.split_once('}')) {
            Some((name, tail)) => (name, tail),
            None => {
                let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(env.get(name).map_or("", String::as_str));
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(command: &str) -> Script {
        Script::parse(command, &Default::default())
    }

    #[test]
    fn echo_expands_the_environment() {
        let env = [("JCS_CENTER".to_string(), "c1".to_string())].into();
        let s = Script::parse("echo on $JCS_CENTER ${JCS_CENTER}x $NOPE. $", &env);
        assert_eq!(s.output, vec!["on c1 c1x . $".to_string()]);
    }

    #[test]
    fn reads_sleep_exit_and_echo() {
        let s = parse("echo hello-conformance; sleep 0.3");
        assert_eq!((s.runtime_secs, s.exit_code), (Some(0.3), None));
        assert_eq!(s.output, vec!["hello-conformance".to_string()]);

        assert_eq!(parse("exit 3"), Script { runtime_secs: Some(0.0), exit_code: Some(3), output: vec![] });
        let s = parse("sleep 1 && sleep 2.5\nexit 300; sleep 100");
        assert_eq!((s.runtime_secs, s.exit_code), (Some(3.5), Some(44)));
        assert_eq!(parse("exit -1").exit_code, Some(255));
        assert_eq!(parse("exit").exit_code, Some(0));
    }

    #[test]
    fn other_commands_leave_runtime_to_the_hint() {
        let s = parse("python train.py --epochs 3 | tee log; echo 'done  now'");
        assert_eq!((s.runtime_secs, s.exit_code), (None, None));
        assert_eq!(s.output, vec!["done now".to_string()]);
        assert_eq!(parse("echo sleep 5").runtime_secs, None, "only a command's first word counts");
        assert_eq!(parse("sleep forever").runtime_secs, None);
    }
}
