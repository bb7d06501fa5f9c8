//! Plain text tables for the human output of the client commands.

use std::io::{self, Write};

/// Writes `header` and `rows` in left-aligned columns two spaces apart, without trailing
/// spaces. Rows shorter than the header leave their last columns empty.
pub fn write_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, w) in widths.iter().enumerate() {
            let cell = row.get(i).map_or("", String::as_str);
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_without_trailing_spaces() {
        let mut out = Vec::new();
        let rows = vec![vec!["orders".to_string(), "16".to_string(), "".to_string()], vec!["a".to_string(), "1".to_string()]];
        write_table(&mut out, &["NAME", "QUEUES", "TYPE"], &rows).expect("write");
        assert_eq!(String::from_utf8(out).expect("utf-8"), "NAME    QUEUES  TYPE\norders  16\na       1\n");
    }
}
