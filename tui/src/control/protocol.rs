//! Control-socket messages, sans-IO: one JSON object per line, UTF-8, `\n`-terminated.
//!
//! Request: `{"id":7,"cmd":"pause","transfer":3}`; reply: `{"id":7,"ok":true,"result":null}` or
//! `{"id":7,"ok":false,"error":"no transfer 3"}`. See docs/PROTOCOL.md, "Control socket".

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::status::TransferId;

/// Longest request line accepted (bytes, without the newline). Longer lines are answered with an
/// error and the connection is closed (the rest of the line cannot be resynchronised cheaply).
pub const MAX_LINE: usize = 64 * 1024;

/// A command, tagged by `cmd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Status,
    Add {
        magnet: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hops: Option<u8>,
    },
    Pause {
        transfer: TransferId,
    },
    Resume {
        transfer: TransferId,
    },
    Remove {
        transfer: TransferId,
        #[serde(default)]
        delete_data: bool,
    },
    SetHops {
        transfer: TransferId,
        hops: u8,
    },
    Shutdown,
}

/// A request: a client-chosen id echoed in the reply, and the command's fields inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub cmd: Command,
}

/// A reply. `id` is `null` only when the request line was so malformed that it had no id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: Option<u64>,
    pub ok: bool,
    /// Present (possibly `null`) when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Present when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok(id: u64, result: serde_json::Value) -> Self {
        Reply {
            id: Some(id),
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(id: Option<u64>, error: impl Into<String>) -> Self {
        Reply {
            id,
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }

    /// Serialises as one line including the trailing `\n`.
    pub fn to_line(&self) -> Vec<u8> {
        encode_line(self)
    }
}

impl Request {
    /// Serialises as one line including the trailing `\n`.
    pub fn to_line(&self) -> Vec<u8> {
        encode_line(self)
    }
}

fn encode_line<T: Serialize>(v: &T) -> Vec<u8> {
    // ok: these types hold only strings, numbers, bools, paths and JSON values, which always
    // serialise (non-UTF-8 paths are the one exception, turned into an error object below).
    let mut out = serde_json::to_vec(v).unwrap_or_else(|e| {
        serde_json::to_vec(&Reply::err(None, format!("cannot encode message: {e}")))
            .unwrap_or_default()
    });
    out.push(b'\n');
    out
}

/// Parses one request line (without or with its trailing `\n`/`\r\n`). On failure returns the
/// error reply to send: it carries the request's id when one could still be read.
pub fn parse_request(line: &[u8]) -> Result<Request, Reply> {
    let line = trim_eol(line);
    let text = std::str::from_utf8(line)
        .map_err(|e| Reply::err(None, format!("request is not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(Reply::err(None, "empty request line"));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Reply::err(None, format!("request is not valid JSON: {e}")))?;
    let id = value.get("id").and_then(|v| v.as_u64());
    if !value.is_object() {
        return Err(Reply::err(None, "request must be a JSON object"));
    }
    if id.is_none() {
        return Err(Reply::err(
            None,
            "request has no \"id\" (a non-negative integer)",
        ));
    }
    serde_json::from_value::<Request>(value)
        .map_err(|e| Reply::err(id, format!("bad request: {e}")))
}

/// Parses one reply line.
pub fn parse_reply(line: &[u8]) -> Result<Reply, String> {
    serde_json::from_slice(trim_eol(line)).map_err(|e| format!("reply is not valid JSON: {e}"))
}

fn trim_eol(mut line: &[u8]) -> &[u8] {
    if let Some(rest) = line.strip_suffix(b"\n") {
        line = rest;
    }
    if let Some(rest) = line.strip_suffix(b"\r") {
        line = rest;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_wire_format() {
        let r = Request {
            id: 7,
            cmd: Command::Remove {
                transfer: 3,
                delete_data: true,
            },
        };
        assert_eq!(
            String::from_utf8(r.to_line()).unwrap(),
            "{\"id\":7,\"cmd\":\"remove\",\"transfer\":3,\"delete_data\":true}\n"
        );
        let s = Request {
            id: 1,
            cmd: Command::Status,
        };
        assert_eq!(
            String::from_utf8(s.to_line()).unwrap(),
            "{\"id\":1,\"cmd\":\"status\"}\n"
        );
        let a = Request {
            id: 2,
            cmd: Command::Add {
                magnet: "magnet:?xt=urn:btih:00".into(),
                dir: None,
                hops: Some(2),
            },
        };
        assert_eq!(
            String::from_utf8(a.to_line()).unwrap(),
            "{\"id\":2,\"cmd\":\"add\",\"magnet\":\"magnet:?xt=urn:btih:00\",\"hops\":2}\n"
        );
    }

    #[test]
    fn parses_every_command() {
        let cases = [
            (r#"{"id":1,"cmd":"status"}"#, Command::Status),
            (
                r#"{"id":1,"cmd":"add","magnet":"m","dir":"/tmp/x"}"#,
                Command::Add {
                    magnet: "m".into(),
                    dir: Some("/tmp/x".into()),
                    hops: None,
                },
            ),
            (
                r#"{"id":1,"cmd":"pause","transfer":4}"#,
                Command::Pause { transfer: 4 },
            ),
            (
                r#"{"cmd":"resume","transfer":4,"id":1}"#,
                Command::Resume { transfer: 4 },
            ),
            (
                r#"{"id":1,"cmd":"remove","transfer":4}"#,
                Command::Remove {
                    transfer: 4,
                    delete_data: false,
                },
            ),
            (
                r#"{"id":1,"cmd":"set_hops","transfer":4,"hops":1}"#,
                Command::SetHops {
                    transfer: 4,
                    hops: 1,
                },
            ),
            (r#"{"id":1,"cmd":"shutdown"}"#, Command::Shutdown),
        ];
        for (line, cmd) in cases {
            let r = parse_request(format!("{line}\r\n").as_bytes()).unwrap();
            assert_eq!(r, Request { id: 1, cmd }, "{line}");
        }
    }

    #[test]
    fn malformed_requests_get_error_replies() {
        let e = parse_request(b"{not json\n").unwrap_err();
        assert_eq!(e.id, None);
        assert!(!e.ok);
        assert!(e.error.unwrap().contains("not valid JSON"));

        let e = parse_request(br#"{"id":9,"cmd":"fly"}"#).unwrap_err();
        assert_eq!(e.id, Some(9));
        assert!(e.error.unwrap().contains("unknown variant `fly`"));

        let e = parse_request(br#"{"id":9,"cmd":"pause"}"#).unwrap_err();
        assert_eq!(e.id, Some(9));
        assert!(e.error.unwrap().contains("transfer"));

        let e = parse_request(br#"{"cmd":"status"}"#).unwrap_err();
        assert_eq!(e.id, None);
        assert!(parse_request(b"[1,2]").is_err());
        assert!(parse_request(b"").is_err());
        assert!(parse_request(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn documented_error_example() {
        // docs/PROTOCOL.md, "Control socket", quotes this exchange.
        let e = parse_request(b"this is not json\n").unwrap_err();
        assert_eq!(
            String::from_utf8(e.to_line()).unwrap(),
            "{\"id\":null,\"ok\":false,\"error\":\"request is not valid JSON: expected ident at line 1 column 2\"}\n"
        );
    }

    #[test]
    fn reply_wire_format() {
        assert_eq!(
            String::from_utf8(Reply::ok(3, json!(null)).to_line()).unwrap(),
            "{\"id\":3,\"ok\":true,\"result\":null}\n"
        );
        assert_eq!(
            String::from_utf8(Reply::err(Some(3), "no transfer 9").to_line()).unwrap(),
            "{\"id\":3,\"ok\":false,\"error\":\"no transfer 9\"}\n"
        );
        assert_eq!(
            String::from_utf8(Reply::err(None, "x").to_line()).unwrap(),
            "{\"id\":null,\"ok\":false,\"error\":\"x\"}\n"
        );
        let r = parse_reply(b"{\"id\":3,\"ok\":true,\"result\":{\"transfer\":5}}\n").unwrap();
        assert_eq!(r.result, Some(json!({"transfer": 5})));
    }
}
