//! Open data as portals and web pages take it, against the real gateway binary: the DCAT-AP.de
//! catalogue validated by GovData's SHACL shapes (`check.py` under pyshacl) in JSON-LD,
//! Turtle and RDF/XML, for the demo network and a city of 1,000 devices in 20 districts; and
//! the web-ready answers: CORS (never on the operator API), gzip/brotli, GeoJSON, licence
//! links, CSV downloads.
//!
//! The validator is not optional: without `MESSNETZ_TEST_SHACL_PYTHON` (set by scripts/test
//! to its venv, with pyshacl) these tests try `python3` and fail when pyshacl is missing.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

const LHT65: &str = "CBF60B0D0376010ADD7FFF";

fn python() -> String {
    std::env::var("MESSNETZ_TEST_SHACL_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// GovData's shapes and `check.py`: `MESSNETZ_TEST_SHACL_DIR`, or `shared/` beside the
/// repository (a checkout) or beside its parent (a worktree), or `/work/shared`.
fn shapes_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MESSNETZ_TEST_SHACL_DIR") {
        return PathBuf::from(dir);
    }
    // A checkout beside `shared/`, a worktree one level deeper, or a clone elsewhere on a
    // machine that has the shared tools at /work/shared.
    let candidates = ["..", "../.."].map(|up| PathBuf::from(format!("{MANIFEST_DIR}/{up}/shared/dcat-ap-de-shacl")));
    for dir in candidates.into_iter().chain([PathBuf::from("/work/shared/dcat-ap-de-shacl")]) {
        if dir.join("check.py").is_file() {
            return dir;
        }
    }
    panic!("no dcat-ap-de-shacl/check.py beside the repository; set MESSNETZ_TEST_SHACL_DIR")
}

/// Validate one served document; panics with the validator's report on any violation.
fn assert_no_violations(what: &str, body: &[u8], file_name: &str, rdflib_format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(file_name);
    std::fs::write(&file, body).unwrap();
    let out = Command::new(python())
        .arg(shapes_dir().join("check.py"))
        .arg(&file)
        .arg(rdflib_format)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); scripts/test installs pyshacl into its venv", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains(" 0 violations"), "{what}: SHACL validation failed:\n{stdout}\n{stderr}");
}

/// (query, Accept header, file name, rdflib format, expected Content-Type) of each syntax:
/// each asked once by `?format=` and once by `Accept`.
const SYNTAXES: [(&str, &str, &str, &str, &str); 6] = [
    ("", "application/ld+json", "c.jsonld", "json-ld", "application/ld+json"),
    ("", "text/turtle", "c.ttl", "turtle", "text/turtle; charset=utf-8"),
    ("", "application/rdf+xml", "c.rdf", "xml", "application/rdf+xml"),
    ("format=jsonld", "", "c.jsonld", "json-ld", "application/ld+json"),
    ("format=ttl", "", "c.ttl", "turtle", "text/turtle; charset=utf-8"),
    ("format=rdfxml", "", "c.rdf", "xml", "application/rdf+xml"),
];

async fn fetch(client: &reqwest::Client, url: &str, accept: &str) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut request = client.get(url);
    if !accept.is_empty() {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let mut headers = BTreeMap::new();
    for (k, v) in response.headers() {
        let entry: &mut String = headers.entry(k.as_str().to_owned()).or_default();
        if !entry.is_empty() {
            entry.push_str(", ");
        }
        entry.push_str(v.to_str().unwrap_or(""));
    }
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn with_query(url: &str, query: &str) -> String {
    match (query.is_empty(), url.contains('?')) {
        (true, _) => url.to_owned(),
        (false, true) => format!("{url}&{query}"),
        (false, false) => format!("{url}?{query}"),
    }
}

#[tokio::test]
async fn the_demo_catalogue_has_no_shacl_violations_in_any_syntax_or_language() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("catalog-demo");
    let (gw, port) = Gateway::start_embedded(dir.path(), &topics).await;
    publish_all(
        port,
        &format!("{}-pub", topics.prefix),
        vec![(topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", 1, LHT65, "2026-11-25T10:00:00Z"))],
    )
    .await;
    wait_for("the reading", Duration::from_secs(20), || async {
        (gw.metric("messnetz_messages_acked_total").await == 1.0).then_some(())
    })
    .await;
    let client = reqwest::Client::new();
    for (query, accept, file, format, content_type) in SYNTAXES {
        for lang in ["", "lang=en"] {
            let q = [query, lang].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("&");
            let url = with_query(&gw.url("/v1/catalog"), &q);
            let (status, headers, body) = fetch(&client, &url, accept).await;
            assert_eq!(status, 200, "{url} ({accept}): {}", String::from_utf8_lossy(&body));
            assert_eq!(headers["content-type"], content_type, "{url} ({accept})");
            assert!(headers["vary"].contains("accept"), "{headers:?}");
            assert!(headers["link"].contains("rel=\"license\""), "{headers:?}");
            // Each syntax validated in both languages, once asked by Accept, once by ?format=
            // (validation is the slow part).
            if query.is_empty() == lang.is_empty() {
                assert_no_violations(&format!("demo catalogue {url} ({accept})"), &body, file, format);
            }
        }
    }

    // What GovData shows and harvesters use, typed as DCAT-AP.de 3.0 wants it (Turtle is the
    // easiest to read for it; the other two carry the same graph).
    let (_, _, ttl) = fetch(&client, &gw.url("/v1/catalog?format=ttl"), "").await;
    let ttl = String::from_utf8(ttl).unwrap();
    for needle in [
        "dcat:contactPoint <http://127.0.0.1:8080/v1/catalog#contact>",
        "vcard:hasEmail <mailto:stadtklima@example.org>",
        "dct:identifier \"http://127.0.0.1:8080/v1/catalog#device/demo-lht65/air_temperature\"",
        "dct:issued \"2026-04-01\"^^xsd:date",
        "dct:modified \"2026-11-25\"^^xsd:date",
        "dcat:startDate \"2026-11-25T00:00:00Z\"^^xsd:dateTime",
        "dcatde:politicalGeocodingURI <http://dcat-ap.de/def/politicalGeocoding/municipalityKey/09162000>",
        "dcatde:politicalGeocodingLevelURI <http://dcat-ap.de/def/politicalGeocoding/Level/municipality>",
        "dcatde:contributorID <http://dcat-ap.de/def/contributors/musterstadt>",
        "dct:language <http://publications.europa.eu/resource/authority/language/DEU>",
        "dct:accrualPeriodicity <http://publications.europa.eu/resource/authority/frequency/UPDATE_CONT>",
        "dcat:mediaType <https://www.iana.org/assignments/media-types/text/csv>",
        "^^gsp:wktLiteral",
        "dct:title \"Lufttemperatur im Stadtteil Altstadt, stündlich\"@de",
        "hydra:totalItems 24",
    ] {
        assert!(ttl.contains(needle), "{needle} missing from\n{ttl}");
    }
    assert!(!ttl.contains("depot") && !ttl.contains("Ost"), "an internal device leaked");
    let (_, _, en) = fetch(&client, &gw.url("/v1/catalog?format=ttl&lang=en"), "").await;
    let en = String::from_utf8(en).unwrap();
    assert!(en.contains("dct:title \"Air temperature in Altstadt, hourly\"@en") && !en.contains("@de"), "{en}");
}

/// The subject of `hydra:nextPage` in a Turtle page, if any.
fn next_page(ttl: &str) -> Option<String> {
    let at = ttl.find("hydra:nextPage <")? + "hydra:nextPage <".len();
    Some(ttl[at..at + ttl[at..].find('>')?].to_owned())
}

#[tokio::test]
async fn a_city_of_1000_devices_in_20_districts_has_no_shacl_violations_on_any_page() {
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices.toml");
    city_devices(&devices, 1000, 20);
    let topics = Topics::new("catalog-city");
    let (gw, port) = Gateway::start_embedded_devices(
        dir.path(),
        &topics,
        &devices,
        "[open_data]\ncatalog_page_size = 1000\ncontact_email = \"klima@example.org\"\ncontact_url = \"https://example.org/klima\"\ncontact_phone = \"+49 89 233-0\"\n",
    )
    .await;
    // Data for the one-device district and two others: their coverage is in the catalogue.
    let uplinks = ["city-0000", "city-0001", "city-0999"]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let eui = format!("A84041{:010X}", 0x0010_0000 + id[5..].parse::<usize>().unwrap());
            (topics.ttn(id), ttn_uplink(id, &eui, 1 + i as u32, LHT65, "2026-11-25T10:00:00Z"))
        })
        .collect();
    publish_all(port, &format!("{}-pub", topics.prefix), uplinks).await;
    wait_for("the readings", Duration::from_secs(20), || async {
        (gw.metric("messnetz_messages_acked_total").await == 3.0).then_some(())
    })
    .await;

    // Follow the hydra links from the stable first-page URL, in Turtle, to the last page;
    // fetch each page in the other two syntaxes as well.
    let client = reqwest::Client::new();
    let mut url = gw.url("/v1/catalog?format=ttl");
    let mut pages = Vec::new();
    loop {
        let (status, headers, body) = fetch(&client, &url, "").await;
        assert_eq!(status, 200, "{url}");
        let ttl = String::from_utf8(body).unwrap();
        let next = next_page(&ttl);
        // The Link header names the same next page.
        assert_eq!(headers["link"].contains("rel=\"next\""), next.is_some(), "{url}: {headers:?}");
        pages.push((url.clone(), ttl));
        match next {
            // The catalogue's links use the public base URL; the test asks its own port.
            Some(n) => url = n.replace("http://127.0.0.1:8080", &gw.url("")),
            None => break,
        }
        assert!(pages.len() < 20, "the pages do not end");
    }
    // 20 districts x 6 quantities, 1,000 devices x 6 quantities, 1,000 per page.
    assert_eq!(pages.len(), 7);
    assert!(pages[0].1.contains("hydra:totalItems 6120"), "{}", &pages[0].1[..2000]);
    assert!(pages[6].1.contains("hydra:previousPage <http://127.0.0.1:8080/v1/catalog?page=6&format=ttl>"));
    let datasets: usize = pages.iter().map(|(_, p)| p.matches(" a dcat:Dataset ;").count()).sum();
    assert_eq!(datasets, 6120);

    // The one-device district covers an area: four distinct corners, not one point.
    let first = &pages[0].1;
    let bbox_at = first.find("#district/Einzelhof/air_temperature").unwrap();
    let polygon_at = bbox_at + first[bbox_at..].find("POLYGON((").unwrap();
    let polygon = &first[polygon_at..polygon_at + first[polygon_at..].find("))").unwrap()];
    let corners: std::collections::BTreeSet<&str> = polygon["POLYGON((".len()..].split(", ").collect();
    assert_eq!(corners.len(), 4, "{polygon}");

    // Each page in each syntax, validated whole: pages run in parallel (validation is the slow part).
    let mut checks = Vec::new();
    for (i, (turtle_url, ttl)) in pages.iter().enumerate() {
        let ttl = ttl.clone();
        checks.push(tokio::task::spawn_blocking(move || {
            assert_no_violations(&format!("city page {}, Turtle", i + 1), ttl.as_bytes(), "p.ttl", "turtle")
        }));
        for (query, file, format, accept) in
            [("format=jsonld", "p.jsonld", "json-ld", ""), ("", "p.rdf", "xml", "application/rdf+xml")]
        {
            let page_url = turtle_url.replace("format=ttl", query).replace("?&", "?").replace("&&", "&");
            let page_url = page_url.trim_end_matches(['?', '&']).to_owned();
            let (status, _, body) = fetch(&client, &page_url, accept).await;
            assert_eq!(status, 200, "{page_url}");
            let what = format!("city page {} ({page_url}, {file})", i + 1);
            checks.push(tokio::task::spawn_blocking(move || assert_no_violations(&what, &body, file, format)));
        }
        // Two validators at a time on a 2-core machine.
        while checks.len() >= 2 {
            checks.remove(0).await.unwrap();
        }
    }
    for c in checks {
        c.await.unwrap();
    }
}

// ---- Web-ready answers ----

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096).read_to_end(&mut out).unwrap();
        }
        other => panic!("unexpected encoding {other}"),
    }
    out
}

#[tokio::test]
async fn open_routes_answer_cors_compressed_and_licensed_and_the_operator_api_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("web-ready");
    let (gw, port) = Gateway::start_embedded(dir.path(), &topics).await;
    publish_all(
        port,
        &format!("{}-pub", topics.prefix),
        vec![(topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", 1, LHT65, "2026-11-25T10:00:00Z"))],
    )
    .await;
    wait_for("the reading", Duration::from_secs(20), || async {
        (gw.metric("messnetz_messages_acked_total").await == 1.0).then_some(())
    })
    .await;
    let client = reqwest::Client::new();
    let range = "from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z";
    let open = [
        "/v1/devices".to_owned(),
        "/v1/devices/demo-lht65/latest".into(),
        format!("/v1/readings?device=demo-lht65&quantity=air_temperature&{range}"),
        format!("/v1/readings?device=demo-lht65&quantity=air_temperature&{range}&format=csv"),
        format!("/v1/aggregates?district=Altstadt&quantity=air_temperature&interval=1h&{range}"),
        format!("/v1/aggregates?device=demo-lht65&quantity=air_temperature&interval=1h&{range}&format=csv"),
        "/v1/latest".into(),
        "/v1/catalog".into(),
        "/openapi.json".into(),
    ];
    for path in &open {
        let url = gw.url(path);
        let plain = client.get(&url).header("origin", "https://karte.example.org").send().await.unwrap();
        assert_eq!(plain.status(), 200, "{path}");
        let h = plain.headers().clone();
        assert_eq!(h.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("*"), "{path}: {h:?}");
        let exposed =
            h.get("access-control-expose-headers").map(|v| v.to_str().unwrap().to_ascii_lowercase()).unwrap_or_default();
        assert!(exposed.contains("link") && exposed.contains("etag"), "{path}: {h:?}");
        let links: Vec<&str> = h.get_all("link").iter().map(|v| v.to_str().unwrap()).collect();
        assert!(
            links.iter().any(|l| l.starts_with("<http://dcat-ap.de/def/licenses/") && l.ends_with("rel=\"license\"")),
            "{path}: {links:?}"
        );
        assert!(h.get("content-encoding").is_none(), "{path}: compressed without Accept-Encoding");
        let identity = plain.bytes().await.unwrap();
        // Every encoding decodes to the same bytes; each has its own ETag.
        let mut tags = vec![h["etag"].to_str().unwrap().to_owned()];
        for encoding in ["gzip", "br"] {
            let r = client.get(&url).header("accept-encoding", encoding).send().await.unwrap();
            let rh = r.headers().clone();
            let body = r.bytes().await.unwrap();
            if identity.len() < 32 {
                continue;
            }
            assert_eq!(rh.get("content-encoding").map(|v| v.to_str().unwrap()), Some(encoding), "{path}: {rh:?}");
            let vary: Vec<&str> = rh.get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
            assert!(vary.iter().any(|v| v.to_ascii_lowercase().contains("accept-encoding")), "{path}: {rh:?}");
            assert_eq!(decode(encoding, &body), identity.to_vec(), "{path}: {encoding} decodes to something else");
            tags.push(rh["etag"].to_str().unwrap().to_owned());
        }
        tags.sort();
        tags.dedup();
        assert!(identity.len() < 32 || tags.len() == 3, "{path}: one tag for different encodings: {tags:?}");
        // A preflight from a page is allowed for reads.
        let pre = client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", "https://karte.example.org")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert!(pre.status().is_success(), "{path}: preflight {}", pre.status());
        assert_eq!(pre.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("*"), "{path}");
    }
    // The catalogue (45 KB for the demo before compression) shrinks a lot.
    let big = client.get(gw.url("/v1/catalog")).header("accept-encoding", "br").send().await.unwrap().bytes().await.unwrap();
    let whole = client.get(gw.url("/v1/catalog")).send().await.unwrap().bytes().await.unwrap();
    assert!(big.len() * 8 < whole.len(), "brotli {} of {} bytes", big.len(), whole.len());

    // GeoJSON is served as GeoJSON.
    let map = client.get(gw.url("/v1/latest")).send().await.unwrap();
    assert_eq!(map.headers()["content-type"], "application/geo+json");
    // The device list names each licence among its devices.
    let list = client.get(gw.url("/v1/devices")).send().await.unwrap();
    let links: Vec<&str> = list.headers().get_all("link").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(links.iter().any(|l| l.contains("dl-by-de/2.0")) && links.iter().any(|l| l.contains("dl-zero-de/2.0")), "{links:?}");

    // CSV downloads: a file name, and the unit on every row.
    for (path, name, header) in [
        (
            format!("/v1/readings?device=demo-lht65&quantity=air_temperature&{range}&format=csv"),
            "attachment; filename=\"demo-lht65_air_temperature_20261125T000000Z.csv\"",
            "time,value,unit,quality",
        ),
        (
            format!("/v1/aggregates?district=Altstadt&quantity=air_temperature&interval=1h&{range}&format=csv"),
            "attachment; filename=\"Altstadt_air_temperature_1h_20261125T000000Z.csv\"",
            "start,count,excluded,mean,min,max,last,unit",
        ),
    ] {
        let r = client.get(gw.url(&path)).send().await.unwrap();
        assert_eq!(r.headers()["content-disposition"], name, "{path}");
        assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
        let text = r.text().await.unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>().join(","), header, "{text}");
        let unit = reader.headers().unwrap().iter().position(|c| c == "unit").unwrap();
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert!(!rows.is_empty(), "{text}");
        assert!(rows.iter().all(|r| &r[unit] == "Cel"), "{text}");
    }

    // The operator API: no CORS at all, not even for a preflight, and no compression.
    for path in ["/v1/admin/devices", "/v1/admin/dead-letters"] {
        let r = client
            .get(gw.url(path))
            .header("origin", "https://karte.example.org")
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "{path}: {:?}", r.headers());
        assert!(r.headers().get("content-encoding").is_none(), "{path}");
        let pre = client
            .request(reqwest::Method::OPTIONS, gw.url(path))
            .header("origin", "https://karte.example.org")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        assert!(pre.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "{path}: {:?}", pre.headers());
    }
}

#[tokio::test]
async fn the_catalogue_refuses_what_it_cannot_serve_and_cors_can_be_limited_to_given_origins() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("catalog-limits");
    let devices = PathBuf::from(format!("{MANIFEST_DIR}/demo/devices.toml"));
    let (gw, _) = Gateway::start_embedded_devices(
        dir.path(),
        &topics,
        &devices,
        "[open_data]\ncors_origins = [\"https://karte.example.org\"]\ncatalog_page_size = 10\ntext_language = \"en\"\n",
    )
    .await;
    let client = reqwest::Client::new();
    let (status, _, body) = fetch(&client, &gw.url("/v1/catalog"), "text/html").await;
    assert_eq!(status, 406, "{}", String::from_utf8_lossy(&body));
    let message: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(message["error"].as_str().unwrap().contains("text/turtle"), "{message}");
    for (query, starts) in [("format=csv", "format:"), ("lang=fr", "lang:"), ("page=0", "page:"), ("colour=red", "colour:")] {
        let (status, _, body) = fetch(&client, &gw.url(&format!("/v1/catalog?{query}")), "").await;
        assert_eq!(status, 400, "{query}");
        let message: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(message["error"].as_str().unwrap().starts_with(starts), "{query}: {message}");
    }
    // 24 datasets, 10 a page: three pages, the fourth does not exist.
    assert_eq!(fetch(&client, &gw.url("/v1/catalog?page=3"), "").await.0, 200);
    let (status, _, body) = fetch(&client, &gw.url("/v1/catalog?page=4"), "").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    // JSON-LD: the first page is the catalogue URL, the paging is hydra, English by configuration.
    let (_, headers, body) = fetch(&client, &gw.url("/v1/catalog"), "application/json").await;
    assert_eq!(headers["content-type"], "application/json");
    let first: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(first["@id"], "http://127.0.0.1:8080/v1/catalog");
    assert_eq!(first["dcat:dataset"].as_array().unwrap().len(), 10);
    let view = &first["hydra:view"];
    assert_eq!(view["@id"], "http://127.0.0.1:8080/v1/catalog?page=1");
    assert_eq!(view["@type"], "hydra:PagedCollection");
    assert_eq!(view["hydra:totalItems"], 24);
    assert_eq!(view["hydra:firstPage"]["@id"], "http://127.0.0.1:8080/v1/catalog");
    assert_eq!(view["hydra:nextPage"]["@id"], "http://127.0.0.1:8080/v1/catalog?page=2");
    assert_eq!(view["hydra:lastPage"]["@id"], "http://127.0.0.1:8080/v1/catalog?page=3");
    assert_eq!(first["dct:title"], serde_json::json!({ "@value": "Urban climate sensor network", "@language": "en" }));
    assert!(headers["link"].contains("<http://127.0.0.1:8080/v1/catalog?page=2>; rel=\"next\""), "{headers:?}");

    // CORS for the configured origin only.
    let allowed = client.get(gw.url("/v1/devices")).header("origin", "https://karte.example.org").send().await.unwrap();
    assert_eq!(
        allowed.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()),
        Some("https://karte.example.org")
    );
    let other = client.get(gw.url("/v1/devices")).header("origin", "https://evil.example.net").send().await.unwrap();
    assert_eq!(other.status(), 200);
    assert!(other.headers().get("access-control-allow-origin").is_none(), "{:?}", other.headers());
}
