//! Byte-size parsing and printing shared by every CLI in the project.
//! Units are binary: K = KiB = 1024; decimal units (KB, MB) are refused, not guessed.

/// Parses `4096`, `4097B`, `64K`, `64KiB`, `1MiB`, `1G`, `1GiB` (binary units, case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size '{s}': expected a number with an optional unit (B, KiB, MiB, GiB)"));
    }
    let n: u64 = num.parse().map_err(|_| format!("invalid size '{s}': number too large"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" | "mb" | "gb" => {
            return Err(format!(
                "invalid size '{s}': decimal units are ambiguous here; use KiB/MiB/GiB (K = KiB = 1024)"
            ));
        }
        u => {
            return Err(format!("invalid size '{s}': unknown unit '{u}' (use B, KiB, MiB or GiB)"));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("invalid size '{s}': too large"))
}

/// Formats a byte count with a binary unit, e.g. `64.0 KiB`, `1.00 GiB`, `4097 B`.
pub fn format_size(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, m) in UNITS {
        if n >= m {
            let v = n as f64 / m as f64;
            return if n.is_multiple_of(m) {
                format!("{} {name}", n / m)
            } else if n < (1 << 20) {
                format!("{n} B")
            } else {
                format!("{v:.2} {name}")
            };
        }
    }
    format!("{n} B")
}

/// Formats a rate in bytes per second, e.g. `1.23 GiB/s`.
pub fn format_rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    let r = bytes as f64 / secs;
    if r >= (1u64 << 30) as f64 {
        format!("{:.2} GiB/s", r / (1u64 << 30) as f64)
    } else if r >= (1u64 << 20) as f64 {
        format!("{:.1} MiB/s", r / (1u64 << 20) as f64)
    } else if r >= 1024.0 {
        format!("{:.1} KiB/s", r / 1024.0)
    } else {
        format!("{r:.1} B/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_rate_is_in_bytes() {
        assert_eq!(format_rate(21, 1.02), "20.6 B/s");
        assert_eq!(format_rate(2048, 1.0), "2.0 KiB/s");
        assert_eq!(format_rate(3 << 20, 1.0), "3.0 MiB/s");
    }

    #[test]
    fn parses_binary_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4097B").unwrap(), 4097);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1gib").unwrap(), 1 << 30);
    }

    #[test]
    fn refuses_bad_sizes() {
        assert!(parse_size("64KB").unwrap_err().contains("KiB"));
        assert!(parse_size("abc").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("20000000000G").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(4097), "4097 B");
        assert_eq!(format_size(3 << 29), "1.50 GiB");
        assert_eq!(format_size(65536), "64 KiB");
        assert_eq!(format_size(12), "12 B");
        assert_eq!(format_rate(1 << 30, 1.0), "1.00 GiB/s");
    }
}
