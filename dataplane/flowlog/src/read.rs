//! Reading flow logs back (offline views, tests): one record per line, streamed.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::FlowRecord;

/// A line longer than this is not a flow record; reject it instead of growing without bound.
const MAX_LINE: usize = 1 << 20;

/// Why a flow log could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be opened or read.
    Io { path: PathBuf, error: io::Error },
    /// A line is not a flow record.
    Parse {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            ReadError::Parse {
                path,
                line,
                message,
            } => write!(f, "{}:{line}: {message}", path.display()),
        }
    }
}

impl std::error::Error for ReadError {}

/// Streams the records of one flow-log file (`-` = stdin). Blank lines are skipped; a line that
/// does not parse yields an error and reading goes on with the next line.
pub fn read_records(path: &Path) -> Result<Records, ReadError> {
    let input: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(BufReader::new(io::stdin()))
    } else {
        let f = File::open(path).map_err(|error| ReadError::Io {
            path: path.to_owned(),
            error,
        })?;
        Box::new(BufReader::with_capacity(64 * 1024, f))
    };
    Ok(Records {
        input,
        path: path.to_owned(),
        line_no: 0,
        buf: Vec::new(),
        done: false,
    })
}

/// Iterator over the records of one file; see [`read_records`].
pub struct Records {
    input: Box<dyn BufRead>,
    path: PathBuf,
    line_no: u64,
    buf: Vec<u8>,
    done: bool,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("path", &self.path)
            .field("line_no", &self.line_no)
            .finish_non_exhaustive()
    }
}

impl Records {
    /// Reads one line into `buf` (without the newline), at most [`MAX_LINE`] bytes kept.
    /// `Ok(false)` at end of input; an over-long line is consumed and reported.
    fn next_line(&mut self) -> io::Result<Option<bool>> {
        self.buf.clear();
        let mut too_long = false;
        loop {
            let chunk = self.input.fill_buf()?;
            if chunk.is_empty() {
                return Ok(if self.buf.is_empty() && !too_long {
                    None
                } else {
                    Some(too_long)
                });
            }
            let (take, found) = match chunk.iter().position(|&c| c == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let piece = &chunk[..if found { take - 1 } else { take }];
            if self.buf.len() + piece.len() > MAX_LINE {
                too_long = true;
            } else if !too_long {
                self.buf.extend_from_slice(piece);
            }
            self.input.consume(take);
            if found {
                return Ok(Some(too_long));
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<FlowRecord, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let too_long = match self.next_line() {
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Ok(Some(t)) => t,
                Err(error) => {
                    self.done = true;
                    return Some(Err(ReadError::Io {
                        path: self.path.clone(),
                        error,
                    }));
                }
            };
            self.line_no += 1;
            if too_long {
                return Some(Err(
                    self.parse_error(format!("line longer than {MAX_LINE} bytes"))
                ));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(
                serde_json::from_slice(&self.buf).map_err(|e| self.parse_error(e.to_string())),
            );
        }
        None
    }
}

impl Records {
    fn parse_error(&self, message: String) -> ReadError {
        ReadError::Parse {
            path: self.path.clone(),
            line: self.line_no,
            message,
        }
    }
}
