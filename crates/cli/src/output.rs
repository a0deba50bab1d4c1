//! Printing results: JSON lines for programs, tables for people.

use std::{
    fmt,
    io::{self, BufWriter, Stdout, Write},
};

use anyhow::Result;
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{MapAccess, Visitor},
};
use serde_json::Value;

use crate::cli::Format;

/// The widest a table cell gets before it is cut.
const MAX_CELL: usize = 60;

/// Columns shown for event records in a table.
pub const RECORD_COLUMNS: &[&str] = &["seq", "event_id", "event_type", "occurred_at_ms", "payload"];
/// Columns shown for feed records in a table.
pub const FEED_COLUMNS: &[&str] = &[
    "position",
    "run_id",
    "seq",
    "event_id",
    "event_type",
    "occurred_at_ms",
    "payload",
];
/// Columns shown for snapshot records in a table.
pub const SNAPSHOT_COLUMNS: &[&str] = &[
    "run_id",
    "snapshot_id",
    "seq",
    "created_at_ms",
    "status",
    "phase",
];

/// Writes results to stdout: each value as one JSON line, or collected
/// and drawn as a table on [`Output::flush`].
pub struct Output {
    format: Format,
    out: BufWriter<Stdout>,
    columns: Option<&'static [&'static str]>,
    rows: Vec<Row>,
}

/// One table row: a JSON value's top-level fields in the order they were
/// written (`serde_json::Map` would sort them).
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// An object's fields, in order.
    Fields(Vec<(String, Value)>),
    /// Anything but an object: shown in a `value` column.
    Scalar(Value),
}

impl Row {
    /// The row of a serializable value.
    pub fn of(value: &impl Serialize) -> Result<Self> {
        let text = serde_json::to_string(value)?;
        Ok(serde_json::from_str(&text)?)
    }

    fn keys(&self) -> Vec<&str> {
        match self {
            Row::Fields(fields) => fields.iter().map(|(key, _)| key.as_str()).collect(),
            Row::Scalar(_) => vec!["value"],
        }
    }

    fn get(&self, column: &str) -> Option<&Value> {
        match self {
            Row::Fields(fields) => fields
                .iter()
                .find(|(key, _)| key == column)
                .map(|(_, value)| value),
            Row::Scalar(value) => (column == "value").then_some(value),
        }
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;

        impl<'de> Visitor<'de> for RowVisitor {
            type Value = Row;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
                let mut fields = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    fields.push((key, value));
                }
                Ok(Row::Fields(fields))
            }

            fn visit_bool<E>(self, v: bool) -> Result<Row, E> {
                Ok(Row::Scalar(Value::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Row, E> {
                Ok(Row::Scalar(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Row, E> {
                Ok(Row::Scalar(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Row, E> {
                Ok(Row::Scalar(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Row, E> {
                Ok(Row::Scalar(Value::from(v)))
            }
            fn visit_unit<E>(self) -> Result<Row, E> {
                Ok(Row::Scalar(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Row, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Value>()? {
                    items.push(item);
                }
                Ok(Row::Scalar(Value::Array(items)))
            }
        }

        deserializer.deserialize_any(RowVisitor)
    }
}

impl Output {
    /// Output in `format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            out: BufWriter::new(io::stdout()),
            columns: None,
            rows: Vec::new(),
        }
    }

    /// Limits a table to these columns (JSON output is unaffected).
    pub fn columns(&mut self, columns: &'static [&'static str]) -> &mut Self {
        self.columns = Some(columns);
        self
    }

    /// Prints one value.
    pub fn emit(&mut self, value: &impl Serialize) -> Result<()> {
        match self.format {
            Format::Json => {
                let mut line = serde_json::to_vec(value)?;
                line.push(b'\n');
                self.out.write_all(&line)?;
            }
            Format::Table => self.rows.push(Row::of(value)?),
        }
        Ok(())
    }

    /// Writes out everything emitted so far (a table is drawn here).
    pub fn flush(&mut self) -> Result<()> {
        if self.format == Format::Table && !self.rows.is_empty() {
            let rows = std::mem::take(&mut self.rows);
            let table = render_table(&rows, self.columns);
            self.out.write_all(table.as_bytes())?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// Draws rows of JSON objects as a table: a header of column names, then
/// one line per row; strings bare, other values as compact JSON.
pub fn render_table(rows: &[Row], columns: Option<&[&str]>) -> String {
    let columns: Vec<String> = match columns {
        Some(columns) => columns.iter().map(|c| (*c).to_owned()).collect(),
        None => {
            let mut seen: Vec<String> = Vec::new();
            for key in rows.iter().flat_map(Row::keys) {
                if !seen.iter().any(|column| column == key) {
                    seen.push(key.to_owned());
                }
            }
            seen
        }
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|column| row.get(column).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            cells
                .iter()
                .map(|row| row[index].chars().count())
                .chain([column.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut table = String::new();
    let mut line = |values: &[String]| {
        let mut text = String::new();
        for (index, value) in values.iter().enumerate() {
            if index > 0 {
                text.push_str("  ");
            }
            text.push_str(value);
            if index + 1 < values.len() {
                let pad = widths[index].saturating_sub(value.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        table.push_str(text.trim_end());
        table.push('\n');
    };
    line(&columns);
    for row in &cells {
        line(row);
    }
    table
}

/// One table cell: strings bare with control characters escaped, other
/// values as compact JSON, cut at [`MAX_CELL`] characters.
fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(text) => text.escape_debug().to_string(),
        other => other.to_string(),
    };
    if text.chars().count() > MAX_CELL {
        let mut cut: String = text.chars().take(MAX_CELL - 1).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_and_cut() {
        let rows = [
            Row::of(&json!({"seq": 1, "event_id": "a", "payload": {"k": "x".repeat(100)}}))
                .unwrap(),
            Row::of(&json!({"seq": 10, "event_id": "line\nbreak"})).unwrap(),
        ];
        let table = render_table(&rows, Some(&["seq", "event_id", "payload"]));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "seq  event_id     payload");
        assert!(lines[1].starts_with("1    a            {\"k\":\"xxx"));
        assert!(lines[1].ends_with('…'));
        assert_eq!(lines[2], "10   line\\nbreak");
    }

    #[test]
    fn rows_keep_field_order() {
        #[derive(Serialize)]
        struct Out {
            zeta: u8,
            alpha: u8,
        }
        let row = Row::of(&Out { zeta: 1, alpha: 2 }).unwrap();
        assert_eq!(row.keys(), vec!["zeta", "alpha"]);
        assert_eq!(
            render_table(&[row], None).lines().next(),
            Some("zeta  alpha")
        );
    }
}
