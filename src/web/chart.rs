//! The 12-month usage chart, drawn on the server as inline SVG (no script):
//! four bars a month (free used, free expired, paid used, purchased), each
//! with a `<title>` for its number, scaled to the largest value.

use maud::{Markup, html};

use super::format;
use crate::domain::view::UsageView;

/// Drawing units of the chart's viewBox (it scales to its box).
const WIDTH: i64 = 720;
const HEIGHT: i64 = 200;
const BAR: i64 = 12;

const SERIES: [(&str, &str); 4] = [
    ("free-used", "Free used"),
    ("free-expired", "Free expired"),
    ("paid-used", "Paid used"),
    ("purchased", "Purchased"),
];

fn values(u: &UsageView) -> [i64; 4] {
    [u.free_used, u.free_expired, u.paid_used, u.paid_purchased]
}

pub fn usage(months: &[UsageView]) -> Markup {
    let top = months.iter().flat_map(values).max().unwrap_or(0).max(1);
    let slot = WIDTH / (months.len().max(1) as i64);
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT + 34) } role="img" aria-labelledby="chart-title" {
                title #chart-title { "Credits per month, the last " (months.len()) " months" }
                @for (i, m) in months.iter().enumerate() {
                    @let first = m.month.first_day();
                    @for (k, v) in values(m).iter().enumerate() {
                        @let h = v * HEIGHT / top;
                        rect class=(SERIES[k].0) x=(i as i64 * slot + 6 + k as i64 * BAR) y=(HEIGHT - h)
                            width=(BAR - 2) height=(h) {
                            title { (first.strftime("%b %Y")) " " (SERIES[k].1) ": " (format::count(*v)) }
                        }
                    }
                    text x=(i as i64 * slot + 6) y=(HEIGHT + 15) { (first.strftime("%b")) }
                    // The year under the first month shown and under each January.
                    @if i == 0 || first.month() == 1 {
                        text.year x=(i as i64 * slot + 6) y=(HEIGHT + 29) { (first.year()) }
                    }
                }
            }
            figcaption {
                @for (class, label) in SERIES {
                    span.legend { span class={ "swatch " (class) } {} (label) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::period::Month;

    #[test]
    fn months_are_labelled_by_name_with_the_year_where_it_starts() {
        let row =
            |m: &str| UsageView { free_used: 1, ..crate::domain::usage::empty(Month::parse(m).unwrap()) };
        let svg = usage(&[row("2026-11"), row("2026-12"), row("2027-01")]).into_string();
        for label in [">Nov<", ">Dec<", ">Jan<", ">2026<", ">2027<"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        assert!(!svg.contains("26-11") && !svg.contains(">2026-12<"), "{svg}");
    }
}
