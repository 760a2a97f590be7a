//! The page's HTML, rendered on the server: everything a reader needs is in it (the latest
//! values and the district table work without JavaScript); the script adds the map and charts.

use std::fmt::Write;

use serde_json::json;

use super::data::{DeviceView, PageData};
use super::i18n::{self, t, Lang};
use crate::citizens::CitizenSensor;
use crate::config::{OpenDataSettings, PageSettings};
use crate::devices::Source;
use crate::model::licence_uri;

/// Text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// JSON inside a `<script>` element: `<` escaped, so no text can close the element.
fn script_json(v: &serde_json::Value) -> String {
    v.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

fn head(out: &mut String, lang: Lang, title: &str) {
    let _ = write!(
        out,
        r##"<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/page/style.css">
</head>
<body>
<a class="skip" href="#main">{skip}</a>
"##,
        lang = lang.code(),
        title = esc(title),
        skip = t(lang, "skip"),
    );
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn source_label(lang: Lang, s: Source) -> &'static str {
    match s {
        Source::Official => t(lang, "official"),
        Source::Citizen => t(lang, "citizen"),
    }
}

fn latest_table(out: &mut String, lang: Lang, devices: &[DeviceView]) {
    let _ = write!(
        out,
        r#"<section id="latest" aria-labelledby="latest-title">
<h2 id="latest-title">{title}</h2>
"#,
        title = t(lang, "latest")
    );
    if devices.iter().all(|d| d.readings.is_empty()) {
        let _ = writeln!(out, "<p>{}</p></section>", t(lang, "none"));
        return;
    }
    let _ = write!(
        out,
        r#"<div class="scroll"><table>
<caption>{caption}</caption>
<thead><tr><th scope="col">{station}</th><th scope="col">{district}</th><th scope="col">{quantity}</th><th scope="col" class="num">{value}</th><th scope="col">{time}</th><th scope="col">{quality}</th><th scope="col">{source}</th></tr></thead>
<tbody>
"#,
        caption = t(lang, "latest"),
        station = t(lang, "station"),
        district = t(lang, "district"),
        quantity = t(lang, "quantity"),
        value = t(lang, "value"),
        time = t(lang, "time"),
        quality = t(lang, "quality"),
        source = t(lang, "source"),
    );
    for d in devices.iter().filter(|d| !d.readings.is_empty()) {
        let stale = if d.stale { format!(r#" <span class="stale">({})</span>"#, t(lang, "stale")) } else { String::new() };
        for (i, r) in d.readings.iter().enumerate() {
            let station = if i == 0 {
                format!(
                    r#"<th scope="rowgroup" rowspan="{n}"><a class="device-link" data-device="{id}" href="/v1/devices/{id}/latest">{name}</a>{stale}</th><td rowspan="{n}">{district}</td>"#,
                    n = d.readings.len(),
                    id = esc(&d.id),
                    name = esc(&d.name),
                    district = esc(&d.district),
                )
            } else {
                String::new()
            };
            let source = if i == 0 {
                format!(
                    r#"<td rowspan="{}" class="src-{}">{}</td>"#,
                    d.readings.len(),
                    d.source.as_str(),
                    source_label(lang, d.source)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                r#"<tr>{station}<td>{q}</td><td class="num" data-quantity="{qn}">{v} {u}</td><td>{time}</td><td class="q-{flag}">{quality}</td>{source}</tr>"#,
                q = esc(&i18n::quantity(lang, r.quantity)),
                qn = r.quantity.name(),
                v = lang.number(r.value),
                u = i18n::unit(r.quantity.unit()),
                time = time(r.time),
                flag = r.flag.as_str(),
                quality = t(lang, r.flag.as_str()),
            );
        }
    }
    let _ = writeln!(out, "</tbody></table></div></section>");
}

fn district_table(out: &mut String, lang: Lang, data: &PageData) {
    let _ = write!(
        out,
        r#"<section id="districts" aria-labelledby="districts-title">
<h2 id="districts-title">{title}</h2>
<p>{note}</p>
"#,
        title = t(lang, "districts"),
        note = t(lang, "districts_note")
    );
    if data.districts.is_empty() {
        let _ = writeln!(out, "<p>{}</p></section>", t(lang, "none"));
        return;
    }
    let _ = write!(
        out,
        r#"<div class="scroll"><table>
<caption>{caption}</caption>
<thead><tr><th scope="col">{district}</th><th scope="col">{quantity}</th><th scope="col" class="num">{mean}</th><th scope="col" class="num">{min}</th><th scope="col" class="num">{max}</th><th scope="col">{until}</th></tr></thead>
<tbody>
"#,
        caption = t(lang, "districts"),
        district = t(lang, "district"),
        quantity = t(lang, "quantity"),
        mean = t(lang, "mean"),
        min = t(lang, "min"),
        max = t(lang, "max"),
        until = t(lang, "until"),
    );
    for r in &data.districts {
        let u = i18n::unit(r.quantity.unit());
        let _ = writeln!(
            out,
            r#"<tr><th scope="row">{z}</th><td>{q}</td><td class="num">{mean} {u}</td><td class="num">{min} {u}</td><td class="num">{max} {u}</td><td>{until}</td></tr>"#,
            z = esc(&r.district),
            q = esc(&i18n::quantity(lang, r.quantity)),
            mean = lang.number(r.mean),
            min = lang.number(r.min),
            max = lang.number(r.max),
            until = time(r.until),
        );
    }
    let _ = writeln!(out, "</tbody></table></div></section>");
}

fn register_forms(out: &mut String, lang: Lang) {
    let _ = write!(
        out,
        r#"<section id="register" aria-labelledby="register-title">
<h2 id="register-title">{title}</h2>
<p>{note}</p>
<form id="register-form" method="post" action="/v1/citizens/sensors">
<input type="hidden" name="lang" value="{lang}">
<p><label for="reg-name">{name}</label><input id="reg-name" name="name" required maxlength="80" autocomplete="off"></p>
<p><label for="reg-lat">{lat}</label><input id="reg-lat" name="lat" required inputmode="decimal" autocomplete="off"></p>
<p><label for="reg-lon">{lon}</label><input id="reg-lon" name="lon" required inputmode="decimal" autocomplete="off"></p>
<p><label for="reg-district">{district}</label><input id="reg-district" name="district" maxlength="80" autocomplete="off"></p>
<p><button type="submit">{submit}</button></p>
</form>
<div id="register-result" role="status" aria-live="polite"></div>
<h3 id="delete-title">{delete}</h3>
<form id="delete-form" aria-labelledby="delete-title">
<p><label for="del-id">{sensor_id}</label><input id="del-id" name="id" required autocomplete="off"></p>
<p><label for="del-token">{token}</label><input id="del-token" name="token" type="password" required autocomplete="off"></p>
<p><button type="submit">{delete_submit}</button></p>
</form>
<div id="delete-result" role="status" aria-live="polite"></div>
</section>
"#,
        title = t(lang, "register"),
        note = t(lang, "register_note"),
        lang = lang.code(),
        name = t(lang, "name"),
        lat = t(lang, "lat"),
        lon = t(lang, "lon"),
        district = t(lang, "district"),
        submit = t(lang, "submit"),
        delete = t(lang, "delete"),
        sensor_id = t(lang, "sensor_id"),
        token = t(lang, "token"),
        delete_submit = t(lang, "delete_submit"),
    );
}

/// The page at `/`.
pub fn index(lang: Lang, page: &PageSettings, open_data: &OpenDataSettings, data: &PageData, citizens_enabled: bool) -> String {
    let mut out = String::with_capacity(32 * 1024);
    head(&mut out, lang, &page.title);
    let other = if lang == Lang::De { Lang::En } else { Lang::De };
    let other_name = if other == Lang::En { "English" } else { "Deutsch" };
    let _ = write!(
        out,
        r#"<header>
<h1>{title}</h1>
<nav aria-label="{language}"><a id="lang-switch" href="/?lang={other}" hreflang="{other}" lang="{other}">{other_name}</a></nav>
</header>
<main id="main">
<p>{intro}</p>
<section id="map-section" aria-labelledby="map-title">
<h2 id="map-title">{map}</h2>
<noscript><p>{noscript}</p></noscript>
<figure>
<div id="map" class="map" role="group" aria-label="{map_alt}"></div>
<figcaption id="map-attribution">{attribution}</figcaption>
</figure>
</section>
<section id="device" aria-labelledby="device-title" hidden>
<h2 id="device-title" tabindex="-1"></h2>
<div id="device-body"></div>
</section>
"#,
        title = esc(&page.title),
        language = t(lang, "language"),
        other = other.code(),
        other_name = other_name,
        intro = t(lang, "intro"),
        map = t(lang, "map"),
        noscript = t(lang, "noscript"),
        map_alt = esc(&t(lang, "map_alt").replace("{n}", &data.devices.len().to_string())),
        attribution = match page.tiles() {
            Some(_) => esc(&page.tile_attribution),
            None => t(lang, "map_plain").to_owned(),
        },
    );
    latest_table(&mut out, lang, &data.devices);
    district_table(&mut out, lang, data);
    if citizens_enabled {
        register_forms(&mut out, lang);
    }
    let footer = t(lang, "footer")
        .replace("{attribution}", &esc(&open_data.attribution))
        .replace("{licence}", &esc(&open_data.district_licence));
    let _ = write!(
        out,
        r#"</main>
<footer><p>{footer}</p><p><a href="/openapi.json">{api}</a> · <a href="/v1/catalog">DCAT-AP</a></p></footer>
"#,
        api = t(lang, "api"),
    );
    // The script's data: the same devices and readings as the table, the words, the tiles.
    let devices: Vec<serde_json::Value> = data
        .devices
        .iter()
        .map(|d| {
            json!({
                "id": d.id, "name": d.name, "lat": d.lat, "lon": d.lon, "district": d.district,
                "source": d.source.as_str(), "licence": d.licence, "licence_uri": licence_uri(&d.licence),
                "stale": d.stale, "last_seen": d.last_seen.map(|t| t.to_rfc3339()),
                "readings": d.readings.iter().map(|r| json!({
                    "quantity": r.quantity.name(), "value": r.value, "unit": r.quantity.unit(),
                    "time": r.time.to_rfc3339(), "quality": r.flag.as_str(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let config = json!({ "tiles": page.tiles(), "devices": devices, "i18n": i18n::json(lang) });
    let _ = write!(
        out,
        r#"<script type="application/json" id="page-data">{}</script>
<script src="/page/app.js" defer></script>
</body>
</html>
"#,
        script_json(&config)
    );
    out
}

/// The answer to the page's registration form: the token, shown once.
pub fn registered(lang: Lang, sensor: &CitizenSensor, token: &str) -> String {
    let mut out = String::new();
    head(&mut out, lang, t(lang, "registered"));
    let _ = write!(
        out,
        r#"<main id="main">
<h1>{title}</h1>
<p>{note}</p>
<dl>
<dt>{id_label}</dt><dd><code>{id}</code></dd>
<dt>{token_label}</dt><dd><code id="token">{token}</code></dd>
</dl>
<p><a href="/?lang={lang}">{back}</a></p>
</main>
</body>
</html>
"#,
        title = t(lang, "registered"),
        note = t(lang, "token_note"),
        id_label = t(lang, "sensor_id"),
        id = esc(sensor.id.as_str()),
        token_label = t(lang, "token"),
        token = esc(token),
        lang = lang.code(),
        back = t(lang, "back"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_script_data_cannot_break_out() {
        assert_eq!(esc(r#"<img src=x onerror="a">&'"#), "&lt;img src=x onerror=&quot;a&quot;&gt;&amp;&#39;");
        let v = json!({ "name": "</script><script>alert(1)</script>" });
        assert!(!script_json(&v).contains("</script>"));
    }
}
