//! Running the stock tools natslab drives — `ip`, `nft`, `tc`, `ss`, `nsenter`, `pip`, `nats-server -t` —
//! through `duct`: arguments as a list (no shell), stdout and stderr captured, stdin fed where given.
//! Quick, synchronous calls: async callers run them on a blocking thread.

use std::ffi::OsString;

/// What a tool said.
#[derive(Debug, Clone)]
pub struct Said {
    pub ok: bool,
    /// How it ended (`exit status: 1`), for messages.
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

impl Said {
    /// stdout then stderr, as a person reads a tool's output.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `program` with `args` (and `input` on stdin); `Err` only when it could not be run at all.
pub fn run<I, A>(program: &str, args: I, input: Option<&str>) -> Result<Said, String>
where
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let shown = format!("`{program} {}`", args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    let mut expr = duct::cmd(program, &args).stdout_capture().stderr_capture().unchecked();
    expr = match input {
        Some(text) => expr.stdin_bytes(text.as_bytes().to_vec()),
        None => expr.stdin_null(),
    };
    let out = expr.run().map_err(|e| format!("{shown}: {e}"))?;
    Ok(Said {
        ok: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// As `run`, where anything but success is an error naming the command and carrying its stderr.
pub fn run_ok<I, A>(program: &str, args: I, input: Option<&str>) -> Result<String, String>
where
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let shown = format!("`{program} {}`", args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    let said = run(program, args, input)?;
    if said.ok {
        Ok(said.stdout)
    } else {
        Err(format!("{shown} failed ({}): {}", said.status, said.stderr.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_status_and_stdin() {
        assert_eq!(run_ok("cat", Vec::<&str>::new(), Some("hello")).unwrap(), "hello");
        let e = run_ok("sh", ["-c", "echo oops >&2; exit 3"], None).unwrap_err();
        assert!(e.contains("failed") && e.contains("oops") && e.contains('3'), "{e}");
        assert!(run("/nonexistent/tool", ["x"], None).is_err());
    }
}
