//! How the SQLite store keeps a delivery's body: compressed with LZ4 when that makes it smaller, byte for byte
//! otherwise.
//!
//! A body is most of what intake writes for an alert, and alerts are repetitive text: field names, the server's name
//! again and again, a probe's error, a stack trace. LZ4 keeps the SCOM and Alertmanager deliveries of the test
//! fixtures in under 60% of their bytes, and every byte saved is one fewer to keep for the retention period, to
//! write to the WAL, and to copy back into the database at the next checkpoint. It is done where the delivery
//! arrived, on an async worker, off the writer thread that every delivery waits on; LZ4 decodes at gigabytes a
//! second, so reading a body back costs far less than finding its page.
//!
//! `deliveries.body_encoding` (migration 12) says how a body is kept: NULL, as it came (every body written before,
//! and one that LZ4 would not make smaller); [`LZ4`], an LZ4 block after the body's length (4 bytes, little-endian).
//! Readers get the bytes as they came through the SQL function `body_of(body, body_encoding)`, which [`register`]
//! adds to every connection; no statement reads `deliveries.body` without it.

use std::borrow::Cow;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::Connection;

/// `deliveries.body_encoding` of a body kept as an LZ4 block after its length.
const LZ4: &str = "lz4";

/// A body smaller than this is kept as it came: LZ4 could save only a few bytes of it.
const COMPRESSED_FROM: usize = 128;

/// The most LZ4 can expand: a block of `n` bytes holds at most about 255 times as many. A stored length beyond
/// this is damage, and is refused before any memory is set aside for it.
const MOST_EXPANSION: usize = 255;

/// A body as the store keeps it.
pub(in crate::store) enum Kept {
    /// As it came.
    AsItCame(bytes::Bytes),
    /// An LZ4 block after its length: [`LZ4`].
    Lz4(Vec<u8>),
}

impl Kept {
    /// Compresses `body` if that makes it smaller by at least an eighth, and keeps it as it came otherwise.
    pub(in crate::store) fn new(body: &bytes::Bytes) -> Kept {
        if body.len() < COMPRESSED_FROM {
            return Kept::AsItCame(body.clone());
        }
        let packed = lz4_flex::block::compress_prepend_size(body);
        if packed.len() > body.len() - body.len() / 8 {
            return Kept::AsItCame(body.clone());
        }
        Kept::Lz4(packed)
    }

    /// The bytes written to `deliveries.body`.
    pub(in crate::store) fn bytes(&self) -> &[u8] {
        match self {
            Kept::AsItCame(body) => body,
            Kept::Lz4(packed) => packed,
        }
    }

    /// What is written to `deliveries.body_encoding`.
    pub(in crate::store) fn encoding(&self) -> Option<&'static str> {
        match self {
            Kept::AsItCame(_) => None,
            Kept::Lz4(_) => Some(LZ4),
        }
    }
}

/// A body as it came, from the bytes and encoding it is kept with.
fn as_it_came<'a>(kept: &'a [u8], encoding: Option<&str>) -> Result<Cow<'a, [u8]>, String> {
    match encoding {
        None => Ok(Cow::Borrowed(kept)),
        Some(LZ4) => {
            let (length, block) = kept
                .split_first_chunk::<4>()
                .ok_or_else(|| format!("an LZ4 body of {} bytes has no length", kept.len()))?;
            let length = u32::from_le_bytes(*length) as usize;
            if length > block.len().saturating_mul(MOST_EXPANSION) + 16 {
                return Err(format!(
                    "an LZ4 body of {} bytes claims {length}, more than LZ4 can hold",
                    kept.len()
                ));
            }
            lz4_flex::block::decompress(block, length)
                .map(Cow::Owned)
                .map_err(|e| format!("an LZ4 body cannot be read back: {e}"))
        }
        Some(other) => Err(format!("a body is kept as {other:?}, which this build cannot read")),
    }
}

/// Adds `body_of(body, body_encoding)` to `conn`: the body as it came, or an error that names what is wrong with
/// it.
pub(in crate::store) fn register(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "body_of",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx: &Context| {
            let kept = ctx.get_raw(0).as_blob_or_null()?.unwrap_or_default();
            let encoding = ctx.get_raw(1).as_str_or_null()?;
            as_it_came(kept, encoding)
                .map(Cow::into_owned)
                .map_err(|e| rusqlite::Error::UserFunctionError(e.into()))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_of_a_kilobyte_or_more_are_kept_in_under_60_percent_and_read_back_as_they_came() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let (mut came, mut kept) = (0, 0);
        for (_, path, body) in crate::store::intake::tests::fixtures() {
            let name = path.display();
            let body = bytes::Bytes::from(body);
            let stored = Kept::new(&body);
            let back: Vec<u8> = conn
                .query_row("SELECT body_of(?1, ?2)", (stored.bytes(), stored.encoding()), |row| {
                    row.get(0)
                })
                .unwrap();
            assert_eq!(back, body, "{name} reads back byte for byte");
            if body.len() >= 1024 {
                assert_eq!(stored.encoding(), Some(LZ4), "{name} is compressed");
                (came, kept) = (came + body.len(), kept + stored.bytes().len());
            }
        }
        assert!(came > 10_000, "the fixtures of a kilobyte or more: {came} bytes");
        assert!(kept * 10 < came * 6, "kept in under 60% of their bytes: {kept} of {came}");
    }

    #[test]
    fn a_body_compression_would_not_shrink_is_kept_as_it_came() {
        let short = bytes::Bytes::from_static(br#"{"health_set":"ActiveSync","server":"cas01"}"#);
        // Bytes with no pattern LZ4 could use: each the low byte of a multiply-xorshift mix of its position.
        let noise: Vec<u8> = (0..4096u64)
            .map(|i| {
                let z = i.wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as u8
            })
            .collect();
        for body in [short, bytes::Bytes::from(noise)] {
            let stored = Kept::new(&body);
            assert_eq!(stored.encoding(), None);
            assert_eq!(stored.bytes(), &body[..], "kept byte for byte");
            assert_eq!(as_it_came(stored.bytes(), None).unwrap(), &body[..]);
        }
    }

    #[test]
    fn a_damaged_body_is_an_error_that_says_what_is_wrong() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let read = |kept: &[u8], encoding: &str| {
            conn.query_row("SELECT body_of(?1, ?2)", (kept, encoding), |row| {
                row.get::<_, Vec<u8>>(0)
            })
            .unwrap_err()
            .to_string()
        };
        assert!(read(b"\x01", LZ4).contains("has no length"), "{}", read(b"\x01", LZ4));
        let huge = [&u32::MAX.to_le_bytes()[..], b"\x10a"].concat();
        assert!(read(&huge, LZ4).contains("more than LZ4 can hold"), "{}", read(&huge, LZ4));
        let cut = Kept::new(&bytes::Bytes::from("alert ".repeat(100)));
        let cut = &cut.bytes()[..cut.bytes().len() - 2];
        assert!(read(cut, LZ4).contains("cannot be read back"), "{}", read(cut, LZ4));
        assert!(read(b"{}", "zstd").contains("\"zstd\", which this build cannot read"));
    }
}
