//! The kernel's function symbols from `/proc/kallsyms`, held compactly: one sorted array of
//! (address, name offset, name length) and one string with every name. The agent keeps the
//! table for its whole life, so its size counts: a node's kernel has 100-200 k symbols, which a
//! table of one boxed string per symbol (blazesym's) holds in about twice the memory.

use std::{
    fs::File,
    io::{self, BufRead, BufReader},
};

/// Where the running kernel lists its symbols.
const KALLSYMS: &str = "/proc/kallsyms";

/// Function symbols of the kernel and its modules, sorted by address.
#[derive(Debug, Default)]
pub struct Kallsyms {
    /// (address, offset of the name in `names`, its length), sorted by address.
    symbols: Vec<(u64, u32, u32)>,
    names: String,
}

impl Kallsyms {
    /// Reads the running kernel's table. Empty when addresses are hidden (`kptr_restrict`
    /// shows them as 0 to readers without CAP_SYSLOG).
    pub fn load() -> io::Result<Kallsyms> {
        Ok(Kallsyms::parse(BufReader::new(File::open(KALLSYMS)?)))
    }

    /// Parses lines of `/proc/kallsyms`: `ADDRESS TYPE NAME [MODULE]`. Only text symbols
    /// (types `t`/`T`, and weak `w`/`W`) are kept: a sampled instruction pointer is in code.
    /// Malformed lines are skipped.
    pub fn parse(reader: impl BufRead) -> Kallsyms {
        let mut table = Kallsyms::default();
        for line in reader.lines() {
            let Ok(line) = line else { break };
            let mut fields = line.split_ascii_whitespace();
            let (Some(address), Some(kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(address) = u64::from_str_radix(address, 16) else {
                continue;
            };
            if address == 0 {
                continue;
            }
            let (Ok(offset), Ok(len)) =
                (u32::try_from(table.names.len()), u32::try_from(name.len()))
            else {
                break;
            };
            table.names.push_str(name);
            table.symbols.push((address, offset, len));
        }
        table
            .symbols
            .sort_unstable_by_key(|&(address, _, _)| address);
        table.symbols.shrink_to_fit();
        table.names.shrink_to_fit();
        table
    }

    /// The function holding `address`: the symbol at or right below it.
    pub fn find(&self, address: u64) -> Option<&str> {
        let index = self
            .symbols
            .partition_point(|&(start, _, _)| start <= address)
            .checked_sub(1)?;
        let (_, offset, len) = self.symbols[index];
        self.names
            .get(offset as usize..offset as usize + len as usize)
    }

    /// Symbols held.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether no symbol is held (hidden addresses, or no kernel table).
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff81001000 t do_one_initcall
ffffffff82000000 D some_data
ffffffff81000800 T startup_64
ffffffffc0a01000 t nf_hook [nf_tables]
ffffffffc0b02000 t bpf_prog_6deef7357e7b4530_on_read_exit\t[bpf]
ffffffff81002000 W weak_function
garbage line
ffffffff81003000 T
";

    #[test]
    fn finds_the_symbol_at_or_below() {
        let table = Kallsyms::parse(TEXT.as_bytes());
        assert_eq!(table.len(), 6);
        assert_eq!(table.find(0xffffffff81000000), Some("_stext"));
        assert_eq!(table.find(0xffffffff810007ff), Some("_stext"));
        assert_eq!(table.find(0xffffffff81000801), Some("startup_64"));
        assert_eq!(table.find(0xffffffff81001234), Some("do_one_initcall"));
        assert_eq!(table.find(0xffffffff81002010), Some("weak_function"));
        // Data symbols are not code: the text symbol below stands.
        assert_eq!(table.find(0xffffffff82000010), Some("weak_function"));
        assert_eq!(table.find(0xffffffffc0a01010), Some("nf_hook"));
        assert_eq!(
            table.find(0xffffffffc0b02040),
            Some("bpf_prog_6deef7357e7b4530_on_read_exit")
        );
        assert_eq!(table.find(0xffffffff80ffffff), None);
    }

    #[test]
    fn hidden_addresses_make_an_empty_table() {
        let table =
            Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 t foo\n".as_bytes());
        assert!(table.is_empty());
        assert_eq!(table.find(0x1000), None);
    }

    #[test]
    fn reads_this_kernel() {
        // Unprivileged runs see zeros (kptr_restrict): an empty table is fine then.
        let table = Kallsyms::load().expect("/proc/kallsyms is readable");
        if let Some(&(address, _, _)) = table.symbols.first() {
            assert!(table.find(address).is_some());
        }
    }
}
