//! `report.html`: one offline review page, built from plain data.
//!
//! The page is a [`Page`]: a title, the run described as label/value pairs, and [`Section`]s
//! of [`Block`]s. A verb fills one in and calls [`write`]; nothing here knows about evaluation,
//! so another verb (or a later section of an existing one) adds what it needs by pushing a
//! `Section`:
//!
//! ```
//! use anodet::report::html::{Block, Page, Section, Table};
//! let mut page = Page::new("wood: evaluation");
//! page.run.push(("backbone".into(), "efficientnet_lite0".into()));
//! page.sections.push(Section {
//!     id: "candidates".into(),
//!     heading: "Candidates".into(),
//!     blocks: vec![Block::Table(Table {
//!         header: vec!["levels".into(), "AUROC".into()],
//!         rows: vec![vec!["7".into(), "0.912".into()]],
//!     })],
//! });
//! let html = page.render();
//! assert!(html.contains("<h2 id=\"candidates\">Candidates</h2>"));
//! ```
//!
//! Blocks: [`Block::Paragraph`] (text), [`Block::Table`] (a small fixed table: headline
//! figures), [`Block::Figures`] (pictures with captions: plots, galleries), [`Block::Cards`]
//! (one card per image with pictures and facts: the mistakes), [`Block::Images`] (every image
//! in one sortable, filterable table with thumbnails) and [`Block::ColourScale`] (the fixed
//! scale of the overlays).
//!
//! Rules the renderer keeps, so callers need not: every text (file names included) is
//! HTML-escaped; picture sources are relative paths (percent-encoded), so the folder can be
//! zipped and sent; no network access (inline CSS and a few lines of inline JS for sorting and
//! filtering, no framework); [`write`] replaces the file atomically.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::Result;
use crate::report::atomic;

/// The whole page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub title: String,
    /// The run: what was evaluated and how (data, category, backbone, …), shown first.
    pub run: Vec<(String, String)>,
    pub sections: Vec<Section>,
}

/// A titled part of the page, listed in the page's table of contents.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Anchor (letters, digits and `-`; anything else is replaced by `-`).
    pub id: String,
    pub heading: String,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
pub enum Block {
    Paragraph(String),
    Table(Table),
    Figures(Vec<Figure>),
    Cards(Vec<Card>),
    Images(ImageTable),
    ColourScale(ColourScale),
}

/// A small fixed table (first column is a row heading).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// A picture in the output folder with its caption.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Path relative to the page.
    pub src: String,
    pub caption: String,
    /// Displayed width in CSS pixels (`None`: the picture's own, at most the page width).
    pub width: Option<u32>,
}

/// One image's card: its pictures (each links to itself at full size) and facts.
#[derive(Debug, Clone)]
pub struct Card {
    pub title: String,
    /// The image's path as the user knows it (shown in full, in the `path` element).
    pub path: String,
    pub pictures: Vec<Figure>,
    pub facts: Vec<(String, String)>,
}

/// Every image in one table: a thumbnail column, then text columns.
#[derive(Debug, Clone, Default)]
pub struct ImageTable {
    pub columns: Vec<Column>,
    pub rows: Vec<ImageRow>,
    /// Choices of the "show" filter: (value, label). Rows match a value by their `kinds`.
    pub filters: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// Sort numerically (cells that do not parse sort last).
    pub numeric: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ImageRow {
    /// Thumbnail path relative to the page.
    pub thumbnail: Option<String>,
    /// Where the thumbnail links to (e.g. a larger overlay), relative to the page.
    pub link: Option<String>,
    /// One cell per column.
    pub cells: Vec<String>,
    /// Filter values this row matches (e.g. `good`, `mistake`).
    pub kinds: Vec<String>,
    /// Drawn as a mistake (red).
    pub highlight: bool,
}

/// The colour bar of overlay maps: colour stops from transparent (low) to red (high).
#[derive(Debug, Clone)]
pub struct ColourScale {
    /// `(position in [0, 1], [r, g, b])`.
    pub stops: Vec<(f32, [u8; 3])>,
    pub low: String,
    pub high: String,
    pub note: String,
}

impl Page {
    pub fn new(title: &str) -> Self {
        Page { title: title.into(), ..Page::default() }
    }

    /// The page as one HTML document.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        let _ = writeln!(out, "<title>{}</title>", escape(&self.title));
        let _ = writeln!(out, "<style>{CSS}</style>\n</head>\n<body>");
        let _ = writeln!(out, "<h1>{}</h1>", escape(&self.title));
        if !self.run.is_empty() {
            out.push_str("<dl class=\"run\">\n");
            for (label, value) in &self.run {
                let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(label), escape(value));
            }
            out.push_str("</dl>\n");
        }
        if self.sections.len() > 1 {
            out.push_str("<nav>");
            for section in &self.sections {
                let _ = write!(
                    out,
                    "<a href=\"#{}\">{}</a> ",
                    anchor(&section.id),
                    escape(&section.heading)
                );
            }
            out.push_str("</nav>\n");
        }
        for section in &self.sections {
            let id = anchor(&section.id);
            let _ = writeln!(out, "<section id=\"section-{id}\">");
            let _ = writeln!(out, "<h2 id=\"{id}\">{}</h2>", escape(&section.heading));
            for block in &section.blocks {
                render_block(&mut out, block);
            }
            out.push_str("</section>\n");
        }
        let _ = writeln!(out, "<script>{JS}</script>\n</body>\n</html>");
        out
    }
}

/// Writes `page` to `path` atomically.
pub fn write(path: &Path, page: &Page) -> Result<()> {
    atomic::write_file(path, page.render().as_bytes())
}

fn render_block(out: &mut String, block: &Block) {
    match block {
        Block::Paragraph(text) => {
            let _ = writeln!(out, "<p>{}</p>", escape(text));
        }
        Block::Table(table) => {
            out.push_str("<table class=\"figures\">\n<thead><tr>");
            for name in &table.header {
                let _ = write!(out, "<th>{}</th>", escape(name));
            }
            out.push_str("</tr></thead>\n<tbody>\n");
            for row in &table.rows {
                out.push_str("<tr>");
                for (i, cell) in row.iter().enumerate() {
                    let tag = if i == 0 { "th" } else { "td" };
                    let _ = write!(out, "<{tag}>{}</{tag}>", escape(cell));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody></table>\n");
        }
        Block::Figures(figures) => {
            out.push_str("<div class=\"plots\">\n");
            for figure in figures {
                out.push_str("<figure>");
                picture(out, figure, "");
                let _ =
                    writeln!(out, "<figcaption>{}</figcaption></figure>", escape(&figure.caption));
            }
            out.push_str("</div>\n");
        }
        Block::Cards(cards) => {
            out.push_str("<div class=\"cards\">\n");
            for card in cards {
                out.push_str("<div class=\"card\">");
                let _ = write!(
                    out,
                    "<h3>{}</h3><div class=\"path\">{}</div><div class=\"pics\">",
                    escape(&card.title),
                    escape(&card.path)
                );
                for figure in &card.pictures {
                    out.push_str("<figure>");
                    picture(out, figure, "");
                    let _ = write!(
                        out,
                        "<figcaption>{}</figcaption></figure>",
                        escape(&figure.caption)
                    );
                }
                out.push_str("</div><dl>");
                for (label, value) in &card.facts {
                    let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(label), escape(value));
                }
                out.push_str("</dl></div>\n");
            }
            out.push_str("</div>\n");
        }
        Block::Images(table) => render_images(out, table),
        Block::ColourScale(scale) => {
            let stops: Vec<String> = scale
                .stops
                .iter()
                .map(|(t, [r, g, b])| format!("rgb({r},{g},{b}) {:.0}%", t * 100.0))
                .collect();
            let _ = writeln!(
                out,
                "<div class=\"scale\"><span>{}</span><span class=\"bar\" style=\"background:linear-gradient(to right,{})\"></span><span>{}</span><small>{}</small></div>",
                escape(&scale.low),
                stops.join(","),
                escape(&scale.high),
                escape(&scale.note)
            );
        }
    }
}

fn render_images(out: &mut String, table: &ImageTable) {
    out.push_str("<div class=\"controls\"><label>filter <input type=\"search\" class=\"filter\" placeholder=\"path or type\"></label>");
    if !table.filters.is_empty() {
        out.push_str(" <label>show <select class=\"show\"><option value=\"\">all</option>");
        for (value, label) in &table.filters {
            let _ = write!(out, "<option value=\"{}\">{}</option>", escape(value), escape(label));
        }
        out.push_str("</select></label>");
    }
    let _ = writeln!(
        out,
        " <span class=\"count\">{} images</span> <small>click a column heading to sort</small></div>",
        table.rows.len()
    );
    out.push_str("<table class=\"images sortable\">\n<thead><tr><th class=\"thumb\"></th>");
    for column in &table.columns {
        let _ = write!(
            out,
            "<th data-numeric=\"{}\">{}</th>",
            u8::from(column.numeric),
            escape(&column.name)
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        let _ = write!(
            out,
            "<tr data-kinds=\"{}\"{}><td class=\"thumb\">",
            escape(&row.kinds.join(" ")),
            if row.highlight { " class=\"mistake\"" } else { "" }
        );
        if let Some(thumbnail) = &row.thumbnail {
            let img = format!("<img loading=\"lazy\" src=\"{}\" alt=\"\">", url(thumbnail));
            match &row.link {
                Some(link) => {
                    let _ = write!(out, "<a href=\"{}\">{img}</a>", url(link));
                }
                None => out.push_str(&img),
            }
        }
        out.push_str("</td>");
        for cell in &row.cells {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

/// A picture that links to itself (so a small display opens the full file).
fn picture(out: &mut String, figure: &Figure, class: &str) {
    let src = url(&figure.src);
    let width = figure.width.map(|w| format!(" width=\"{w}\"")).unwrap_or_default();
    let _ = write!(
        out,
        "<a href=\"{src}\"><img{class} loading=\"lazy\" src=\"{src}\"{width} alt=\"{}\"></a>",
        escape(&figure.caption),
        class = if class.is_empty() { String::new() } else { format!(" class=\"{class}\"") },
    );
}

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative path as a URL: percent-encodes everything but unreserved characters and `/`,
/// then escapes for the attribute.
fn url(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// An anchor id: letters, digits and `-` only.
fn anchor(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect()
}

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1360px;padding:12px 20px 40px;color:#222;background:#fff}
h1{font-size:22px;margin:8px 0 6px}h2{font-size:18px;margin:28px 0 8px;padding-top:8px;border-top:2px solid #ddd}h3{font-size:14px;margin:0 0 2px}
dl.run{display:grid;grid-template-columns:max-content 1fr;gap:1px 14px;margin:0 0 8px;font-size:13px}dl.run dt{color:#666}dl.run dd{margin:0;word-break:break-all}
nav{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ddd;z-index:2}nav a{margin-right:14px;color:#1a5fb4;text-decoration:none}
table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:middle}
table.figures td{font-variant-numeric:tabular-nums}table.figures thead th{background:#f3f3f3}
.plots{display:flex;flex-wrap:wrap;gap:10px}.plots figure{margin:0;max-width:100%}.plots img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;border-left:5px solid #c01c28;padding:8px;width:360px;background:#fffafa}
.card .path{font:11px monospace;color:#444;word-break:break-all;margin-bottom:4px}.card .pics{display:flex;gap:6px}.card figure{margin:0}
.card img{width:160px;height:auto;display:block;border:1px solid #ccc}.card dl{display:grid;grid-template-columns:max-content 1fr;gap:0 10px;margin:6px 0 0;font-size:12px}.card dt{color:#666}.card dd{margin:0}
.scale{display:flex;align-items:center;gap:8px;margin:6px 0}.scale .bar{display:inline-block;width:220px;height:14px;border:1px solid #999}.scale small{color:#555}
.controls{margin:6px 0;display:flex;gap:12px;align-items:center;flex-wrap:wrap}.controls small,.count{color:#555}
table.images{width:100%}table.images th{background:#f3f3f3;cursor:pointer;position:sticky;top:34px;z-index:1}table.images th.thumb{cursor:default}
table.images td{font-size:13px;word-break:break-all}table.images td.thumb{width:84px}table.images td.thumb img{max-width:80px;max-height:80px;display:block}
table.images tr.mistake td{background:#fde8e8}th[data-dir=asc]::after{content:" \25B2"}th[data-dir=desc]::after{content:" \25BC"}
"#;

const JS: &str = r#"
document.querySelectorAll('table.sortable').forEach(function(table){
  var heads=table.tHead.rows[0].cells, body=table.tBodies[0];
  Array.prototype.forEach.call(heads,function(th,i){
    if(th.classList.contains('thumb'))return;
    th.addEventListener('click',function(){
      var numeric=th.dataset.numeric==='1', dir=th.dataset.dir==='asc'?'desc':'asc';
      Array.prototype.forEach.call(heads,function(h){delete h.dataset.dir});th.dataset.dir=dir;
      var key=function(row){var t=row.cells[i].textContent;if(!numeric)return t.toLowerCase();var v=parseFloat(t);return isNaN(v)?null:v};
      var rows=Array.prototype.slice.call(body.rows).map(function(r){return[key(r),r]});
      rows.sort(function(a,b){if(a[0]===b[0])return 0;if(a[0]===null)return 1;if(b[0]===null)return -1;return (a[0]<b[0]?-1:1)*(dir==='asc'?1:-1)});
      rows.forEach(function(p){body.appendChild(p[1])});
    });
  });
});
document.querySelectorAll('.controls').forEach(function(controls){
  var table=controls.nextElementSibling, filter=controls.querySelector('.filter'), show=controls.querySelector('.show'), count=controls.querySelector('.count');
  function apply(){
    var q=filter.value.toLowerCase(), kind=show?show.value:'', shown=0;
    Array.prototype.forEach.call(table.tBodies[0].rows,function(row){
      var ok=(!q||row.textContent.toLowerCase().indexOf(q)>=0)&&(!kind||(' '+row.dataset.kinds+' ').indexOf(' '+kind+' ')>=0);
      row.hidden=!ok;if(ok)shown++;
    });
    count.textContent=shown+' of '+table.tBodies[0].rows.length+' images';
  }
  filter.addEventListener('input',apply);if(show)show.addEventListener('change',apply);
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        assert_eq!(escape("<img src=x onerror=alert(1)>"), "&lt;img src=x onerror=alert(1)&gt;");
        assert_eq!(escape(r#"a "b" & 'c'"#), "a &quot;b&quot; &amp; &#39;c&#39;");
        assert_eq!(url("thumbs/a b\"<.jpg"), "thumbs/a%20b%22%3C.jpg");
        assert_eq!(anchor("per type/x"), "per-type-x");
    }

    #[test]
    fn hostile_names_do_not_become_markup() {
        let hostile = "<img src=x onerror=alert(1)>.png";
        let mut page = Page::new(hostile);
        page.run.push(("category".into(), "\"><script>x</script>".into()));
        page.sections.push(Section {
            id: "all".into(),
            heading: "All".into(),
            blocks: vec![Block::Images(ImageTable {
                columns: vec![Column { name: "path".into(), numeric: false }],
                rows: vec![ImageRow {
                    thumbnail: Some("t/1.jpg".into()),
                    cells: vec![hostile.into()],
                    kinds: vec!["good".into()],
                    ..ImageRow::default()
                }],
                filters: vec![],
            })],
        });
        let html = page.render();
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(!html.contains("<script>x"), "{html}");
        assert_eq!(html.matches("<script>").count(), 1, "only the page's own script");
    }
}
