//! Traces in the Azure Functions public trace format
//! (`invocations_per_function_md.anon.dNN.csv`, Shahrad et al., ATC '20):
//! one row per function, columns `HashOwner,HashApp,HashFunction,Trigger`
//! then `1,2,…` = invocations in each minute of the day. The real files
//! have 1440 minute columns; this parser takes any number, so shorter
//! excerpts work too. `generate` writes a synthetic trace in that format.

use std::fmt::Write as _;

use anyhow::{bail, Context};

use crate::rng::Rng;
use crate::zipf::Zipf;

const KEY_COLUMNS: [&str; 4] = ["HashOwner", "HashApp", "HashFunction", "Trigger"];

/// One function's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceFunction {
    pub owner: String,
    pub app: String,
    pub function: String,
    pub trigger: String,
    /// Invocations in each minute.
    pub counts: Vec<u32>,
}

impl TraceFunction {
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub minutes: usize,
    pub functions: Vec<TraceFunction>,
}

impl Trace {
    /// Parses CSV text; errors name the line.
    pub fn parse(text: &str) -> anyhow::Result<Trace> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            bail!("empty trace: expected a header line")
        };
        let cols: Vec<&str> = header
            .trim_end_matches('\r')
            .split(',')
            .map(str::trim)
            .collect();
        if cols.len() < 5 || cols[..4] != KEY_COLUMNS {
            bail!(
                "line 1: header must start with {} followed by minute columns 1,2,…",
                KEY_COLUMNS.join(",")
            );
        }
        for (i, c) in cols[4..].iter().enumerate() {
            if c.parse::<usize>().ok() != Some(i + 1) {
                bail!(
                    "line 1: minute column {} is named '{c}', expected '{}'",
                    i + 1,
                    i + 1
                );
            }
        }
        let minutes = cols.len() - 4;
        let mut functions = Vec::new();
        for (n, line) in lines {
            let line_no = n + 1;
            let fields: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
            if fields.len() != cols.len() {
                bail!(
                    "line {line_no}: {} fields, the header has {}",
                    fields.len(),
                    cols.len()
                );
            }
            let counts = fields[4..]
                .iter()
                .enumerate()
                .map(|(m, f)| {
                    f.trim().parse::<u32>().with_context(|| {
                        format!(
                            "line {line_no}: minute {}: '{f}' is not a non-negative count",
                            m + 1
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<u32>>>()?;
            functions.push(TraceFunction {
                owner: fields[0].to_string(),
                app: fields[1].to_string(),
                function: fields[2].to_string(),
                trigger: fields[3].to_string(),
                counts,
            });
        }
        Ok(Trace { minutes, functions })
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Trace> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read trace {}", path.display()))?;
        Trace::parse(&text).with_context(|| format!("invalid trace {}", path.display()))
    }

    /// CSV text in the same format.
    pub fn to_csv(&self) -> String {
        let mut out = KEY_COLUMNS.join(",");
        for m in 1..=self.minutes {
            let _ = write!(out, ",{m}");
        }
        out.push('\n');
        for f in &self.functions {
            let _ = write!(out, "{},{},{},{}", f.owner, f.app, f.function, f.trigger);
            for c in &f.counts {
                let _ = write!(out, ",{c}");
            }
            out.push('\n');
        }
        out
    }

    /// The `cap` busiest functions (by total invocations), busiest first;
    /// ties keep file order.
    pub fn busiest(&self, cap: usize) -> Trace {
        let mut functions = self.functions.clone();
        functions.sort_by_key(|f| std::cmp::Reverse(f.total()));
        functions.truncate(cap);
        Trace {
            minutes: self.minutes,
            functions,
        }
    }

    pub fn total(&self) -> u64 {
        self.functions.iter().map(TraceFunction::total).sum()
    }
}

/// Knobs of the synthetic trace.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub functions: usize,
    pub minutes: usize,
    pub seed: u64,
    /// Mean invocations per minute of the most popular function.
    pub peak_per_minute: f64,
    /// Zipf exponent of popularity across functions.
    pub zipf_s: f64,
}

/// Trigger mix, roughly the shares reported for the Azure trace.
const TRIGGERS: [(&str, f64); 7] = [
    ("http", 0.36),
    ("queue", 0.15),
    ("timer", 0.15),
    ("orchestration", 0.07),
    ("event", 0.02),
    ("storage", 0.03),
    ("others", 0.22),
];

fn pick_trigger(rng: &mut Rng) -> &'static str {
    let mut u = rng.next_f64() * TRIGGERS.iter().map(|t| t.1).sum::<f64>();
    for (name, w) in TRIGGERS {
        if u < w {
            return name;
        }
        u -= w;
    }
    "others"
}

/// A synthetic trace with the traits that matter for pool sizing:
/// Zipf-skewed popularity (a few hot functions, many that run a few times an
/// hour), a diurnal swing, on/off bursty functions, and timer functions that
/// fire on a fixed period. Counts per minute are Poisson around the rate.
pub fn generate(opts: &GenOptions) -> anyhow::Result<Trace> {
    anyhow::ensure!(
        opts.functions >= 1 && opts.minutes >= 1,
        "need at least one function and one minute"
    );
    let popularity = Zipf::new(opts.functions, opts.zipf_s)?;
    let head = popularity.probability(0);
    let mut rng = Rng::new(opts.seed);
    let mut functions = Vec::with_capacity(opts.functions);
    let mut owner = rng.hex(32);
    let mut app = rng.hex(32);
    for rank in 0..opts.functions {
        // Several functions per app, several apps per owner.
        if rank > 0 && rng.next_f64() < 0.5 {
            app = rng.hex(32);
            if rng.next_f64() < 0.5 {
                owner = rng.hex(32);
            }
        }
        let trigger = pick_trigger(&mut rng);
        let mean = opts.peak_per_minute * popularity.probability(rank) / head;
        let phase = rng.next_f64();
        let bursty = trigger != "timer" && rng.next_f64() < 0.25;
        let period = [1usize, 5, 15, 60][(rng.next_u64() % 4) as usize];
        let offset = (rng.next_u64() as usize) % period;
        let mut on = true;
        let counts = (0..opts.minutes)
            .map(|m| {
                if trigger == "timer" {
                    return u32::from(m % period == offset);
                }
                let day = m as f64 / 1440.0;
                let diurnal = 1.0 + 0.5 * (2.0 * std::f64::consts::PI * (day - phase)).sin();
                if bursty && rng.next_f64() < 0.1 {
                    on = !on;
                }
                let rate = if bursty && !on {
                    mean * 0.05
                } else {
                    mean * diurnal * if bursty { 2.0 } else { 1.0 }
                };
                rng.poisson(rate).min(u64::from(u32::MAX)) as u32
            })
            .collect();
        functions.push(TraceFunction {
            owner: owner.clone(),
            app: app.clone(),
            function: rng.hex(32),
            trigger: trigger.to_string(),
            counts,
        });
    }
    Ok(Trace {
        minutes: opts.minutes,
        functions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> GenOptions {
        GenOptions {
            functions: 30,
            minutes: 120,
            seed: 3,
            peak_per_minute: 60.0,
            zipf_s: 1.1,
        }
    }

    #[test]
    fn generate_parse_round_trip() {
        let trace = generate(&opts()).unwrap();
        assert_eq!(trace.functions.len(), 30);
        assert!(trace
            .functions
            .iter()
            .all(|f| f.counts.len() == 120 && f.function.len() == 64));
        let csv = trace.to_csv();
        assert!(csv.starts_with("HashOwner,HashApp,HashFunction,Trigger,1,2,3,"));
        assert!(csv.lines().next().unwrap().ends_with(",119,120"));
        assert_eq!(Trace::parse(&csv).unwrap(), trace);
        // Same seed, same trace; another seed, another trace.
        assert_eq!(generate(&opts()).unwrap(), trace);
        assert_ne!(generate(&GenOptions { seed: 4, ..opts() }).unwrap(), trace);
    }

    #[test]
    fn generated_popularity_is_skewed_and_timers_are_periodic() {
        let trace = generate(&opts()).unwrap();
        let busiest = trace.busiest(30);
        let top = busiest.functions[0].total();
        let median = busiest.functions[15].total();
        assert!(top > 5 * median.max(1), "top {top}, median {median}");
        for f in trace.functions.iter().filter(|f| f.trigger == "timer") {
            assert!(f.counts.iter().all(|&c| c <= 1));
            assert!(f.total() >= 2, "a timer fires at least every hour");
        }
    }

    #[test]
    fn parses_the_azure_layout_and_crlf() {
        let text = "HashOwner,HashApp,HashFunction,Trigger,1,2,3\r\n\
                    o1,a1,f1,http,0,5,1\r\n\
                    o1,a1,f2,timer,1,0,1\r\n";
        let t = Trace::parse(text).unwrap();
        assert_eq!(t.minutes, 3);
        assert_eq!(t.functions[0].counts, vec![0, 5, 1]);
        assert_eq!(t.functions[1].trigger, "timer");
        assert_eq!(t.total(), 8);
        assert_eq!(t.busiest(1).functions[0].function, "f1");
    }

    #[test]
    fn errors_name_the_line() {
        let bad_header = Trace::parse("Owner,App,Fn,Trigger,1\n").unwrap_err();
        assert!(bad_header.to_string().contains("line 1"), "{bad_header}");
        let gap = Trace::parse("HashOwner,HashApp,HashFunction,Trigger,1,3\n").unwrap_err();
        assert!(gap.to_string().contains("minute column 2"), "{gap}");
        let short =
            Trace::parse("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1\n").unwrap_err();
        assert!(short.to_string().contains("line 2"), "{short}");
        let neg = Trace::parse("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1,-1\n")
            .unwrap_err();
        assert!(format!("{neg:#}").contains("line 2: minute 2"), "{neg:#}");
        assert!(Trace::parse("").is_err());
    }
}
