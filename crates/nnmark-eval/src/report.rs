//! The evaluation report: Markdown tables and one self-contained HTML file with inline SVG
//! plots (drawn with `plotters`). It opens with the strongest plausible attack per row (the
//! lowest key match within the accuracy bound), then the survival heat map (scheme × attack),
//! key match against accuracy loss per attack with each row's Pareto front, accuracy and key match
//! against the pruning rate, the null distribution of independent models' match rates with
//! the decision threshold, and per-scheme tables in the layout of the papers (frontier
//! stitching Table 2: rate, key elements removed ± sd, extraction rate, accuracy ± sd).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::CellRecord;
use nnmark::error::{Error, Result};

/// Mean and (sample) standard deviation.
pub(crate) fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64;
    (m, var.sqrt())
}

/// Cells of one (data set, architecture, scheme) row, by attack, in config order.
type Rows<'a> = BTreeMap<String, Vec<(String, Vec<&'a CellRecord>)>>;

fn rows(records: &[CellRecord]) -> Rows<'_> {
    let mut out: Rows<'_> = BTreeMap::new();
    for r in records {
        let row = format!("{} / {} / {}", r.dataset, r.arch, r.scheme);
        let attacks = out.entry(row).or_default();
        match attacks.iter_mut().find(|(a, _)| *a == r.attack) {
            Some((_, cells)) => cells.push(r),
            None => attacks.push((r.attack.clone(), vec![r])),
        }
    }
    for attacks in out.values_mut() {
        // The baseline first, then pruning by rate, then the rest by name.
        attacks.sort_by(|a, b| {
            attack_order(&a.0)
                .total_cmp(&attack_order(&b.0))
                .then(a.0.cmp(&b.0))
        });
    }
    out
}

fn attack_order(a: &str) -> f64 {
    if a == "none" {
        -1.0
    } else {
        prune_rate(a).unwrap_or(10.0)
    }
}

/// Every attack of the rows, the baseline first, then pruning by rate, then by name.
fn columns(rows: &Rows<'_>) -> Vec<String> {
    let mut attacks: Vec<String> = rows.values().flatten().map(|(a, _)| a.clone()).collect();
    attacks.sort_by(|a, b| attack_order(a).total_cmp(&attack_order(b)).then(a.cmp(b)));
    attacks.dedup();
    attacks
}

/// The rate of a plain layer-wise pruning attack (`prune:0.5`).
fn prune_rate(attack: &str) -> Option<f64> {
    attack.strip_prefix("prune:")?.parse().ok()
}

fn pct(v: f64) -> String {
    format!("{:.2}", v * 100.0)
}

/// One attack's cells summarised for the headline: mean key match, mean accuracy loss in
/// percentage points, seeds where the mark is still detected, seeds where it was removed.
pub(crate) struct AttackSummary<'a> {
    pub(crate) attack: &'a str,
    pub(crate) match_rate: f64,
    pub(crate) marked_match_rate: f64,
    pub(crate) loss_pp: f64,
    pub(crate) plausible: bool,
    pub(crate) detected: usize,
    pub(crate) removed: usize,
    pub(crate) seeds: usize,
}

pub(crate) fn summarise<'a>(attack: &'a str, cells: &[&CellRecord]) -> AttackSummary<'a> {
    let mean = |f: &dyn Fn(&CellRecord) -> f64| {
        cells.iter().map(|r| f(r)).sum::<f64>() / cells.len().max(1) as f64
    };
    AttackSummary {
        attack,
        match_rate: mean(&|r| r.key.match_rate),
        marked_match_rate: mean(&|r| r.marked_key.match_rate),
        loss_pp: mean(&|r| (r.marked_accuracy - r.attacked_accuracy) * 100.0),
        // An attack counts as plausible only where it is plausible in every seed.
        plausible: cells.iter().all(|r| r.plausible),
        detected: cells.iter().filter(|r| r.verdict.watermarked).count(),
        removed: cells.iter().filter(|r| r.removed).count(),
        seeds: cells.len(),
    }
}

/// The headline: per row, the plausible attack (within the accuracy bound in every seed) that
/// leaves the least key evidence (the Watermark-Robustness-Toolbox's rule), with its cost.
fn strongest_attacks(md: &mut String, rows: &Rows<'_>) {
    let _ = writeln!(
        md,
        "## Strongest plausible attack\n\nPer row, of the attacks that stay within the accuracy bound in every seed, the one with the lowest mean key match; *detected* counts the seeds where the verdict still shows the mark, *removed* those where it does not.\n"
    );
    let _ = writeln!(
        md,
        "| data / model / scheme | attack | key match (marked → attacked) | accuracy loss (pp) | detected | removed |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for (row, cells) in rows {
        // A mark the unattacked model does not show in some seed leaves nothing to remove
        // there: every attack would "remove" it.
        if let Some((_, none)) = cells.iter().find(|(a, _)| a == "none") {
            let shown = none.iter().filter(|r| r.verdict.watermarked).count();
            if shown < none.len() {
                let _ = writeln!(
                    md,
                    "| {row} | none: the marked model itself did not show the mark in {} of {} seeds (key match {}); nothing to remove | – | – | {shown}/{} | – |",
                    none.len() - shown,
                    none.len(),
                    pct(none.iter().map(|r| r.key.match_rate).sum::<f64>() / none.len() as f64),
                    none.len()
                );
                continue;
            }
        }
        let best = cells
            .iter()
            .filter(|(a, _)| a != "none")
            .map(|(a, c)| summarise(a, c))
            .filter(|s| s.plausible)
            .min_by(|x, y| {
                x.match_rate
                    .total_cmp(&y.match_rate)
                    .then(x.loss_pp.total_cmp(&y.loss_pp))
            });
        match best {
            Some(s) => {
                let _ = writeln!(
                    md,
                    "| {row} | {} | {} → {} | {:.2} | {}/{} | {}/{} |",
                    s.attack,
                    pct(s.marked_match_rate),
                    pct(s.match_rate),
                    s.loss_pp,
                    s.detected,
                    s.seeds,
                    s.removed,
                    s.seeds
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "| {row} | no attack stayed within the bound | – | – | – | – |"
                );
            }
        }
    }
    let _ = writeln!(md);
}

/// The adaptive remote attacker's rows: per row and detector, the share of key items it
/// flagged (its true-positive rate), the share of test images it flagged (its false-positive
/// rate on the ordinary traffic remote verification's decoys are drawn from), the accuracy it
/// cost and whether the mark still shows.
fn query_detectors(md: &mut String, rows: &Rows<'_>) {
    let mut lines = Vec::new();
    for (row, cells) in rows {
        for (attack, c) in cells {
            let guarded: Vec<&crate::GuardRecord> =
                c.iter().filter_map(|r| r.guard.as_ref()).collect();
            if guarded.is_empty() {
                continue;
            }
            let rate = |num: &dyn Fn(&crate::GuardRecord) -> usize,
                        den: &dyn Fn(&crate::GuardRecord) -> usize| {
                let (n, d) = guarded
                    .iter()
                    .fold((0, 0), |(n, d), g| (n + num(g), d + den(g)));
                if d == 0 {
                    "–".to_string()
                } else {
                    pct(n as f64 / d as f64)
                }
            };
            let s = summarise(attack, c);
            lines.push(format!(
                "| {row} | {attack} | {} | {} | {:.2} | {}/{} | {}/{} |",
                rate(&|g| g.key_flagged, &|g| g.key_queries),
                rate(&|g| g.test_flagged, &|g| g.test_queries),
                s.loss_pp,
                s.detected,
                s.seeds,
                s.removed,
                s.seeds
            ));
        }
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Query detectors (the adaptive remote attacker)\n\nThe stolen model served behind a detector fitted on the attacker's data; flagged queries get another answer. *Key flagged* is the detector's true-positive rate on the key's items, *test flagged* its false-positive rate on ordinary test images (remote verification draws its decoys from them), pooled over seeds.\n"
    );
    let _ = writeln!(
        md,
        "| data / model / scheme | detector | key flagged | test flagged | accuracy loss (pp) | detected | removed |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for l in lines {
        let _ = writeln!(md, "{l}");
    }
    let _ = writeln!(md);
}

/// The Markdown report.
pub fn markdown(records: &[CellRecord]) -> String {
    let mut md = String::new();
    let names: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r.config.as_str()).collect();
    let seeds: std::collections::BTreeSet<u64> = records.iter().map(|r| r.seed).collect();
    let _ = writeln!(
        md,
        "# nnmark evaluation: {}\n",
        names.into_iter().collect::<Vec<_>>().join(", ")
    );
    if let Some(r) = records.first() {
        let _ = writeln!(
            md,
            "{} cells, seeds {:?}, nnmark {} (burn {}). A mark is *detected* when the cell's verdict says watermarked at the configured false-positive rate, judged against the key's own null (the scheme's exact null, or shadow models stored in the key), else against the independent reference models (worst one's upper bound, never below the analytic rate); an attack *removes* it only if it is not detected and the attacked accuracy stays within the plausibility bound of the marked model's. Accuracies in %, mean ± sd over seeds.\n",
            records.len(),
            seeds,
            r.versions["nnmark"].as_str().unwrap_or("?"),
            r.versions["burn"].as_str().unwrap_or("?"),
        );
    }
    let rows = rows(records);
    strongest_attacks(&mut md, &rows);
    query_detectors(&mut md, &rows);
    let _ = writeln!(md, "## Survival (seeds where the mark is still detected)\n");
    let attacks = columns(&rows);
    let _ = writeln!(md, "| data / model / scheme | {} |", attacks.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(attacks.len()));
    for (row, cells) in &rows {
        let mut line = format!("| {row} |");
        for a in &attacks {
            match cells.iter().find(|(x, _)| x == a) {
                Some((_, c)) => {
                    let det = c.iter().filter(|r| r.verdict.watermarked).count();
                    let _ = write!(line, " {det}/{} |", c.len());
                }
                None => line.push_str(" – |"),
            }
        }
        let _ = writeln!(md, "{line}");
    }
    for (row, cells) in &rows {
        let _ = writeln!(md, "\n## {row}\n");
        let _ = writeln!(
            md,
            "| attack | seeds | marked acc. | attacked acc. | key match | p-value (median) | detected | plausible | removed |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        for (a, c) in cells {
            let (ma, _) = mean_sd(&c.iter().map(|r| r.marked_accuracy).collect::<Vec<_>>());
            let (aa, asd) = mean_sd(&c.iter().map(|r| r.attacked_accuracy).collect::<Vec<_>>());
            let (km, ksd) = mean_sd(&c.iter().map(|r| r.key.match_rate).collect::<Vec<_>>());
            let mut ps: Vec<f64> = c.iter().map(|r| r.verdict.p_value).collect();
            ps.sort_by(f64::total_cmp);
            let _ = writeln!(
                md,
                "| {a} | {} | {} | {} ± {} | {} ± {} | {:.1e} | {}/{} | {}/{} | {}/{} |",
                c.len(),
                pct(ma),
                pct(aa),
                pct(asd),
                pct(km),
                pct(ksd),
                ps[ps.len() / 2],
                c.iter().filter(|r| r.verdict.watermarked).count(),
                c.len(),
                c.iter().filter(|r| r.plausible).count(),
                c.len(),
                c.iter().filter(|r| r.removed).count(),
                c.len(),
            );
        }
        let pruning: Vec<(f64, &Vec<&CellRecord>)> = cells
            .iter()
            .filter_map(|(a, c)| prune_rate(a).map(|r| (r, c)))
            .collect();
        if !pruning.is_empty() {
            let _ = writeln!(
                md,
                "\nPruning (frontier stitching Table 2 layout):\n\n| pruning rate | avg. key elements removed | stdev | extraction rate | acc. after | acc. stdev |\n|---|---|---|---|---|---|"
            );
            for (rate, c) in pruning {
                let removed: Vec<f64> = c
                    .iter()
                    .map(|r| (r.key.queries - r.key.matches) as f64)
                    .collect();
                let (rm, rsd) = mean_sd(&removed);
                let extracted = c.iter().filter(|r| r.verdict.watermarked).count();
                let (aa, asd) = mean_sd(&c.iter().map(|r| r.attacked_accuracy).collect::<Vec<_>>());
                let _ = writeln!(
                    md,
                    "| {:.0}% | {rm:.2} | {rsd:.2} | {:.0}% | {} | {} |",
                    rate * 100.0,
                    100.0 * extracted as f64 / c.len() as f64,
                    pct(aa),
                    pct(asd)
                );
            }
        }
        let nulls: Vec<(u64, u64, u64)> = cells
            .iter()
            .filter(|(a, _)| a == "none")
            .flat_map(|(_, c)| c.iter())
            .flat_map(|r| {
                r.null_matches
                    .iter()
                    .map(move |&m| (m, r.key.queries, r.verdict.threshold))
            })
            .collect();
        if !nulls.is_empty() {
            let (q, t) = (nulls[0].1, nulls[0].2);
            let _ = writeln!(
                md,
                "\nIndependent models on the keys (null distribution): {} of {q} items; the threshold is {t}.",
                nulls
                    .iter()
                    .map(|n| n.0.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    md
}

fn svg(
    width: u32,
    height: u32,
    draw: impl FnOnce(
        &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| Error::invalid("plot", "svg", e.to_string()))?;
        draw(&root).map_err(|e| Error::invalid("plot", "svg", e))?;
        root.present()
            .map_err(|e| Error::invalid("plot", "svg", e.to_string()))?;
    }
    Ok(out)
}

fn heat_map(records: &[CellRecord]) -> Result<String> {
    let rows = rows(records);
    let attacks = columns(&rows);
    let (cw, ch, left, top) = (90i32, 28i32, 260i32, 120i32);
    let width = (left + cw * attacks.len() as i32 + 20) as u32;
    let height = (top + ch * rows.len() as i32 + 20) as u32;
    svg(width, height, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        for (j, a) in attacks.iter().enumerate() {
            let x = left + cw * j as i32 + cw / 2;
            root.draw(&Text::new(
                a.clone(),
                (x, top - 8),
                ("sans-serif", 11)
                    .into_font()
                    .transform(FontTransform::Rotate270),
            ))
            .map_err(e)?;
        }
        for (i, (row, cells)) in rows.iter().enumerate() {
            let y = top + ch * i as i32;
            root.draw(&Text::new(row.clone(), (6, y + 8), ("sans-serif", 12)))
                .map_err(e)?;
            for (j, a) in attacks.iter().enumerate() {
                let x = left + cw * j as i32;
                let Some((_, c)) = cells.iter().find(|(x, _)| x == a) else {
                    continue;
                };
                let det = c.iter().filter(|r| r.verdict.watermarked).count();
                let frac = det as f64 / c.len() as f64;
                // Green where the mark survives, red where it is gone.
                let color = RGBColor(
                    (220.0 * (1.0 - frac) + 30.0) as u8,
                    (180.0 * frac + 40.0) as u8,
                    70,
                );
                root.draw(&Rectangle::new(
                    [(x, y), (x + cw - 2, y + ch - 2)],
                    color.filled(),
                ))
                .map_err(e)?;
                root.draw(&Text::new(
                    format!("{det}/{}", c.len()),
                    (x + cw / 2 - 10, y + 8),
                    ("sans-serif", 12).into_font().color(&WHITE),
                ))
                .map_err(e)?;
            }
        }
        Ok(())
    })
}

/// Accuracy and key match against the pruning rate, one line pair per row.
fn pruning_curves(records: &[CellRecord]) -> Result<Option<String>> {
    let rows = rows(records);
    // (row, [(rate, accuracy, key match)])
    type Curve = (String, Vec<(f64, f64, f64)>);
    let series: Vec<Curve> = rows
        .iter()
        .map(|(row, cells)| {
            let pts = cells
                .iter()
                .filter_map(|(a, c)| {
                    let rate = if a == "none" {
                        Some(0.0)
                    } else {
                        prune_rate(a)
                    }?;
                    let (acc, _) =
                        mean_sd(&c.iter().map(|r| r.attacked_accuracy).collect::<Vec<_>>());
                    let (km, _) = mean_sd(&c.iter().map(|r| r.key.match_rate).collect::<Vec<_>>());
                    Some((rate, acc, km))
                })
                .collect::<Vec<_>>();
            (row.clone(), pts)
        })
        .filter(|(_, p)| p.len() >= 2)
        .collect();
    if series.is_empty() {
        return Ok(None);
    }
    let plot = svg(900, 360, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let halves = root.split_evenly((1, 2));
        for (k, area) in halves.iter().enumerate() {
            let title = if k == 0 {
                "test accuracy vs pruning rate"
            } else {
                "key match vs pruning rate"
            };
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 14))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(40)
                .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
                .map_err(e)?;
            chart.configure_mesh().x_desc("rate").draw().map_err(e)?;
            for (i, (row, pts)) in series.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(
                        pts.iter().map(|p| (p.0, if k == 0 { p.1 } else { p.2 })),
                        color.stroke_width(2),
                    ))
                    .map_err(e)?
                    .label(row.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerLeft)
                .draw()
                .map_err(e)?;
        }
        Ok(())
    })?;
    Ok(Some(plot))
}

/// Accuracy loss against key match, one point per attack (mean over seeds) and one colour per
/// row, with each row's Pareto front (the attacks no other attack beats on both) as a line: the
/// lower left is the attacker's goal.
fn pareto(records: &[CellRecord]) -> Result<Option<String>> {
    let rows = rows(records);
    let series: Vec<(String, Vec<(f64, f64)>)> = rows
        .iter()
        .map(|(row, cells)| {
            let pts = cells
                .iter()
                .filter(|(a, _)| a != "none")
                .map(|(a, c)| {
                    let s = summarise(a, c);
                    (s.loss_pp, s.match_rate)
                })
                .collect::<Vec<_>>();
            (row.clone(), pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(None);
    }
    let max_loss = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(5.0f64, f64::max)
        .min(100.0);
    let min_loss = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(0.0f64, f64::min)
        .max(-100.0);
    let plot = svg(900, 420, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(
                "key match vs accuracy loss per attack (lower left: the attacker's goal)",
                ("sans-serif", 14),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(min_loss..max_loss * 1.05, 0f64..1.02f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("accuracy loss (pp)")
            .y_desc("key match")
            .draw()
            .map_err(e)?;
        for (i, (row, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(e)?
                .label(row.clone())
                .legend(move |(x, y)| Circle::new((x + 7, y), 4, color.filled()));
            chart
                .draw_series(LineSeries::new(pareto_front(pts), color.stroke_width(1)))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
        Ok(())
    })?;
    Ok(Some(plot))
}

/// The points no other point beats on both coordinates (lower is better on each), by the first.
pub(crate) fn pareto_front(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut front: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        if front.last().is_none_or(|q| p.1 < q.1) {
            front.push(p);
        }
    }
    front
}

/// Match rates of independent models with each row's threshold rate marked.
fn null_plot(records: &[CellRecord]) -> Result<Option<String>> {
    let rows: Vec<(String, Vec<f64>, f64)> = rows(records)
        .into_iter()
        .filter_map(|(row, cells)| {
            let base: Vec<&CellRecord> = cells
                .iter()
                .filter(|(a, _)| a == "none")
                .flat_map(|(_, c)| c.iter().copied())
                .collect();
            let first = base.first()?;
            let rates: Vec<f64> = base
                .iter()
                .flat_map(|r| {
                    r.null_matches
                        .iter()
                        .map(|&m| m as f64 / r.key.queries.max(1) as f64)
                })
                .collect();
            if rates.is_empty() {
                return None;
            }
            Some((
                row,
                rates,
                first.verdict.threshold as f64 / first.key.queries.max(1) as f64,
            ))
        })
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let n = rows.len();
    let plot = svg(700, (60 + 30 * n) as u32, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(
                "independent models' match rate (dots) and the threshold (bar)",
                ("sans-serif", 13),
            )
            .margin(10)
            .x_label_area_size(25)
            .y_label_area_size(10)
            .build_cartesian_2d(0f64..1f64, 0f64..n as f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .draw()
            .map_err(e)?;
        for (i, (row, rates, thr)) in rows.iter().enumerate() {
            let y = i as f64 + 0.5;
            chart
                .draw_series(rates.iter().map(|&r| Circle::new((r, y), 4, BLUE.filled())))
                .map_err(e)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*thr, y - 0.4), (*thr, y + 0.4)],
                    RED.stroke_width(3),
                )))
                .map_err(e)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    row.clone(),
                    (0.01, y + 0.45),
                    ("sans-serif", 11),
                )))
                .map_err(e)?;
        }
        Ok(())
    })?;
    Ok(Some(plot))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The HTML report: the Markdown tables as preformatted text around inline SVG plots.
pub fn html(records: &[CellRecord]) -> Result<String> {
    let md = markdown(records);
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>nnmark evaluation</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style></head><body>\n",
    );
    let _ = writeln!(
        h,
        "<h1>nnmark evaluation</h1>\n<h2>Survival heat map</h2>\n{}",
        heat_map(records)?
    );
    if let Some(p) = pareto(records)? {
        let _ = writeln!(h, "<h2>Accuracy loss against key match</h2>\n{p}");
    }
    if let Some(p) = pruning_curves(records)? {
        let _ = writeln!(h, "<h2>Pruning</h2>\n{p}");
    }
    if let Some(p) = null_plot(records)? {
        let _ = writeln!(h, "<h2>Null distribution</h2>\n{p}");
    }
    let _ = writeln!(
        h,
        "<h2>Tables</h2>\n<pre>{}</pre>\n</body></html>",
        escape(&md)
    );
    Ok(h)
}

/// Writes `report.md` and `report.html` into `dir`.
pub fn write(records: &[CellRecord], dir: &Path) -> Result<(PathBuf, PathBuf)> {
    if records.is_empty() {
        return Err(Error::invalid(
            "results",
            dir.display(),
            "no cell records to report on",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let md = dir.join("report.md");
    let html_path = dir.join("report.html");
    nnmark::io::write_atomic(&md, markdown(records).as_bytes(), Some(0o644))?;
    nnmark::io::write_atomic(&html_path, html(records)?.as_bytes(), Some(0o644))?;
    Ok((md, html_path))
}

#[cfg(test)]
mod tests {
    use super::pareto_front;

    #[test]
    fn the_pareto_front_keeps_the_points_nothing_beats() {
        let pts = [
            (1.0, 0.9),
            (0.5, 0.95),
            (3.0, 0.2),
            (2.0, 0.5),
            (2.5, 0.6),
            (4.0, 0.2),
        ];
        assert_eq!(
            pareto_front(&pts),
            vec![(0.5, 0.95), (1.0, 0.9), (2.0, 0.5), (3.0, 0.2)]
        );
        assert!(pareto_front(&[]).is_empty());
    }
}
