//! The DCAT-AP.de 3.0 content of one catalogue page: the catalogue, its data service, the
//! page's datasets with their distributions, and the hydra paging links.
//!
//! Datasets: one per district and quantity (hourly aggregates over the district's open
//! devices), then one per open device and quantity (its readings and aggregates), in a fixed
//! order so that the pages stay the same between requests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use super::graph::Node;
use super::texts::{Download, Texts};
use crate::aggregates::{Interval, Scope};
use crate::config::OpenDataSettings;
use crate::devices::Device;
use crate::model::{licence_uri, Quantity};

const XSD_DATE: &str = "http://www.w3.org/2001/XMLSchema#date";
const XSD_DATE_TIME: &str = "http://www.w3.org/2001/XMLSchema#dateTime";
const XSD_INTEGER: &str = "http://www.w3.org/2001/XMLSchema#integer";
const WKT: &str = "http://www.opengis.net/ont/geosparql#wktLiteral";

mod v {
    pub const CATALOG: &str = "http://www.w3.org/ns/dcat#Catalog";
    pub const DATASET_CLASS: &str = "http://www.w3.org/ns/dcat#Dataset";
    pub const DISTRIBUTION_CLASS: &str = "http://www.w3.org/ns/dcat#Distribution";
    pub const DATA_SERVICE: &str = "http://www.w3.org/ns/dcat#DataService";
    pub const DATASET: &str = "http://www.w3.org/ns/dcat#dataset";
    pub const DISTRIBUTION: &str = "http://www.w3.org/ns/dcat#distribution";
    pub const SERVICE: &str = "http://www.w3.org/ns/dcat#service";
    pub const ACCESS_URL: &str = "http://www.w3.org/ns/dcat#accessURL";
    pub const DOWNLOAD_URL: &str = "http://www.w3.org/ns/dcat#downloadURL";
    pub const MEDIA_TYPE: &str = "http://www.w3.org/ns/dcat#mediaType";
    pub const THEME: &str = "http://www.w3.org/ns/dcat#theme";
    pub const KEYWORD: &str = "http://www.w3.org/ns/dcat#keyword";
    pub const CONTACT_POINT: &str = "http://www.w3.org/ns/dcat#contactPoint";
    pub const BBOX: &str = "http://www.w3.org/ns/dcat#bbox";
    pub const START_DATE: &str = "http://www.w3.org/ns/dcat#startDate";
    pub const END_DATE: &str = "http://www.w3.org/ns/dcat#endDate";
    pub const ENDPOINT_URL: &str = "http://www.w3.org/ns/dcat#endpointURL";
    pub const ENDPOINT_DESCRIPTION: &str = "http://www.w3.org/ns/dcat#endpointDescription";
    pub const TITLE: &str = "http://purl.org/dc/terms/title";
    pub const DESCRIPTION: &str = "http://purl.org/dc/terms/description";
    pub const PUBLISHER: &str = "http://purl.org/dc/terms/publisher";
    pub const IDENTIFIER: &str = "http://purl.org/dc/terms/identifier";
    pub const ISSUED: &str = "http://purl.org/dc/terms/issued";
    pub const MODIFIED: &str = "http://purl.org/dc/terms/modified";
    pub const LANGUAGE: &str = "http://purl.org/dc/terms/language";
    pub const ACCRUAL: &str = "http://purl.org/dc/terms/accrualPeriodicity";
    pub const SPATIAL: &str = "http://purl.org/dc/terms/spatial";
    pub const TEMPORAL: &str = "http://purl.org/dc/terms/temporal";
    pub const FORMAT: &str = "http://purl.org/dc/terms/format";
    pub const LICENSE: &str = "http://purl.org/dc/terms/license";
    pub const LOCATION: &str = "http://purl.org/dc/terms/Location";
    pub const PERIOD: &str = "http://purl.org/dc/terms/PeriodOfTime";
    pub const AGENT: &str = "http://xmlns.com/foaf/0.1/Agent";
    pub const NAME: &str = "http://xmlns.com/foaf/0.1/name";
    pub const KIND: &str = "http://www.w3.org/2006/vcard/ns#Kind";
    pub const ORGANIZATION: &str = "http://www.w3.org/2006/vcard/ns#Organization";
    pub const FN: &str = "http://www.w3.org/2006/vcard/ns#fn";
    pub const HAS_EMAIL: &str = "http://www.w3.org/2006/vcard/ns#hasEmail";
    pub const HAS_URL: &str = "http://www.w3.org/2006/vcard/ns#hasURL";
    pub const HAS_TELEPHONE: &str = "http://www.w3.org/2006/vcard/ns#hasTelephone";
    pub const GEOMETRY: &str = "http://www.w3.org/ns/locn#geometry";
    pub const GEOCODING: &str = "http://dcat-ap.de/def/dcatde/politicalGeocodingURI";
    pub const GEOCODING_LEVEL: &str = "http://dcat-ap.de/def/dcatde/politicalGeocodingLevelURI";
    pub const CONTRIBUTOR: &str = "http://dcat-ap.de/def/dcatde/contributorID";
    pub const ATTRIBUTION: &str = "http://dcat-ap.de/def/dcatde/licenseAttributionByText";
    pub const HYDRA_VIEW: &str = "http://www.w3.org/ns/hydra/core#view";
    pub const PAGED: &str = "http://www.w3.org/ns/hydra/core#PagedCollection";
    pub const TOTAL: &str = "http://www.w3.org/ns/hydra/core#totalItems";
    pub const PER_PAGE: &str = "http://www.w3.org/ns/hydra/core#itemsPerPage";
    pub const FIRST: &str = "http://www.w3.org/ns/hydra/core#firstPage";
    pub const LAST: &str = "http://www.w3.org/ns/hydra/core#lastPage";
    pub const NEXT: &str = "http://www.w3.org/ns/hydra/core#nextPage";
    pub const PREVIOUS: &str = "http://www.w3.org/ns/hydra/core#previousPage";
}

/// The values the JSON-LD context types, so that they read as plain strings in JSON.
pub const COERCED: [(&str, &str); 6] = [
    (v::START_DATE, XSD_DATE_TIME),
    (v::END_DATE, XSD_DATE_TIME),
    (v::ISSUED, XSD_DATE),
    (v::MODIFIED, XSD_DATE),
    (v::BBOX, WKT),
    (v::GEOMETRY, WKT),
];

const ENVIRONMENT_THEME: &str = "http://publications.europa.eu/resource/authority/data-theme/ENVI";
const FILE_TYPE: &str = "http://publications.europa.eu/resource/authority/file-type/";
const IANA: &str = "https://www.iana.org/assignments/media-types/";
const EU_LANGUAGE: &str = "http://publications.europa.eu/resource/authority/language/";
const EU_FREQUENCY: &str = "http://publications.europa.eu/resource/authority/frequency/";
const MUNICIPALITY_KEY: &str = "http://dcat-ap.de/def/politicalGeocoding/municipalityKey/";
const MUNICIPALITY_LEVEL: &str = "http://dcat-ap.de/def/politicalGeocoding/Level/municipality";
const CONTRIBUTORS: &str = "http://dcat-ap.de/def/contributors/";

/// One dataset of the catalogue, before it is described.
#[derive(Debug, Clone)]
pub enum Entry {
    /// Hourly aggregates of a quantity over a district's open devices.
    District { district: String, members: Vec<Arc<Device>>, quantity: Quantity },
    /// Readings and aggregates of one open device's quantity.
    Device { device: Arc<Device>, quantity: Quantity },
}

/// Every dataset of the open devices, in catalogue order. `measured` gives each open
/// device's quantities (its profile's and those derived from them).
pub fn entries(open: &[Arc<Device>], measured: &BTreeMap<String, BTreeSet<Quantity>>) -> Vec<Entry> {
    let mut districts: BTreeMap<&str, Vec<Arc<Device>>> = BTreeMap::new();
    for d in open {
        districts.entry(d.district.as_str()).or_default().push(d.clone());
    }
    let mut out = Vec::new();
    for (district, members) in &districts {
        let qs: BTreeSet<Quantity> = members.iter().flat_map(|d| measured[d.id.as_str()].iter().copied()).collect();
        for quantity in qs {
            out.push(Entry::District { district: (*district).to_owned(), members: members.clone(), quantity });
        }
    }
    for d in open {
        for quantity in &measured[d.id.as_str()] {
            out.push(Entry::Device { device: d.clone(), quantity: *quantity });
        }
    }
    out
}

/// What page URLs are made of: the catalogue URL and the query the client chose.
#[derive(Debug, Clone)]
pub struct PageUrls {
    pub catalog: String,
    /// `format=..&lang=..` as the client gave them, to keep on every page; may be empty.
    pub keep: String,
}

impl PageUrls {
    /// Page `n` with its number in the URL, also for page 1: the name of the page itself
    /// (the bare catalogue URL names the catalogue).
    pub fn numbered(&self, n: usize) -> String {
        match self.keep.is_empty() {
            true => format!("{}?page={n}", self.catalog),
            false => format!("{}?page={n}&{}", self.catalog, self.keep),
        }
    }

    /// Where page `n` is linked: the first page at the catalogue URL.
    pub fn page(&self, n: usize) -> String {
        match (n, self.keep.is_empty()) {
            (1, true) => self.catalog.clone(),
            (1, false) => format!("{}?{}", self.catalog, self.keep),
            (n, true) => format!("{}?page={n}", self.catalog),
            (n, false) => format!("{}?page={n}&{}", self.catalog, self.keep),
        }
    }
}

/// Coverage of a dataset: first and last stored time, if any.
pub type Extent = Option<(DateTime<Utc>, DateTime<Utc>)>;

/// The catalogue page as an RDF tree. `extent` gives the stored span of a scope and quantity.
pub fn catalog_page<E>(
    od: &OpenDataSettings,
    texts: Texts,
    page_entries: &[Entry],
    paging: &PageUrlsAndCounts,
    now: DateTime<Utc>,
    mut extent: impl FnMut(&Scope, Quantity) -> Result<Extent, E>,
) -> Result<Node, E> {
    let base = &od.base_url;
    let lang = texts.tag();
    let catalog_url = format!("{base}/v1/catalog");
    let publisher = Node::named(&od.publisher_uri, &[v::AGENT]).text(v::NAME, &od.publisher_name);
    let mut contact = Node::named(format!("{catalog_url}#contact"), &[v::ORGANIZATION, v::KIND]).text(v::FN, &od.contact_name);
    if let Some(mail) = &od.contact_email {
        contact = contact.iri(v::HAS_EMAIL, format!("mailto:{mail}"));
    }
    if let Some(url) = &od.contact_url {
        contact = contact.iri(v::HAS_URL, url);
    }
    if let Some(phone) = &od.contact_phone {
        let digits: String = phone.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect();
        contact = contact.iri(v::HAS_TELEPHONE, format!("tel:{digits}"));
    }
    let (title, description) = match texts.0 {
        crate::config::TextLanguage::De => (&od.catalog_title, &od.catalog_description),
        crate::config::TextLanguage::En => (&od.catalog_title_en, &od.catalog_description_en),
    };
    let today = now.date_naive();
    let language = format!("{EU_LANGUAGE}{}", od.language);
    let district_licence = licence_uri(&od.district_licence).unwrap_or_default();

    let (floor, ceiling) = plausible_span(now);
    let mut datasets = Vec::with_capacity(page_entries.len());
    for entry in page_entries {
        let common = Common { od, texts, publisher: &publisher, contact: &contact, language: &language };
        let node = match entry {
            Entry::District { district, members, quantity } => {
                let scope = Scope::District(district.clone());
                let span = extent(&scope, *quantity)?.and_then(|(f, l)| clamp_days(f, l, floor, ceiling));
                district_dataset(&common, district, members, *quantity, span)
            }
            Entry::Device { device, quantity } => {
                let scope = Scope::Device(device.id.to_string());
                let span = extent(&scope, *quantity)?.and_then(|(f, l)| clamp_days(f, l, floor, ceiling));
                device_dataset(&common, device, *quantity, span)
            }
        };
        datasets.push(node);
    }

    let service = Node::named(format!("{base}/openapi.json#service"), &[v::DATA_SERVICE])
        .lang(v::TITLE, texts.service_title(title), lang)
        .node(v::PUBLISHER, publisher.clone())
        .iri(v::ENDPOINT_URL, base.clone())
        .iri(v::ENDPOINT_DESCRIPTION, format!("{base}/openapi.json"))
        .iri(v::LICENSE, district_licence);
    let mut view = Node::named(paging.urls.numbered(paging.page), &[v::PAGED])
        .typed(v::TOTAL, paging.total.to_string(), XSD_INTEGER)
        .typed(v::PER_PAGE, paging.per_page.to_string(), XSD_INTEGER)
        .iri(v::FIRST, paging.urls.page(1))
        .iri(v::LAST, paging.urls.page(paging.last_page));
    if paging.page < paging.last_page {
        view = view.iri(v::NEXT, paging.urls.page(paging.page + 1));
    }
    if paging.page > 1 {
        view = view.iri(v::PREVIOUS, paging.urls.page(paging.page - 1));
    }

    let mut catalog = Node::named(catalog_url, &[v::CATALOG])
        .lang(v::TITLE, title.clone(), lang)
        .lang(v::DESCRIPTION, description.clone(), lang)
        .node(v::PUBLISHER, publisher.clone())
        .iri(v::LANGUAGE, language.clone())
        .typed(v::ISSUED, od.issued.to_string(), XSD_DATE)
        .typed(v::MODIFIED, today.max(od.issued).to_string(), XSD_DATE)
        .iri(v::LICENSE, district_licence)
        .node(v::SERVICE, service)
        .node(v::HYDRA_VIEW, view);
    for d in datasets {
        catalog = catalog.node(v::DATASET, d);
    }
    Ok(catalog)
}

/// The paging numbers and URLs of one page.
#[derive(Debug, Clone)]
pub struct PageUrlsAndCounts {
    pub page: usize,
    pub last_page: usize,
    pub total: usize,
    pub per_page: usize,
    pub urls: PageUrls,
}

/// What every dataset shares.
struct Common<'a> {
    od: &'a OpenDataSettings,
    texts: Texts,
    publisher: &'a Node,
    contact: &'a Node,
    language: &'a str,
}

impl Common<'_> {
    /// A dataset with the properties every one has.
    #[allow(clippy::too_many_arguments)]
    fn dataset(
        &self,
        id: String,
        title: String,
        description: String,
        keywords: [String; 3],
        spatial: Node,
        span: Option<(DateTime<Utc>, DateTime<Utc>)>,
        issued: NaiveDate,
        distributions: Vec<Node>,
    ) -> Node {
        let lang = self.texts.tag();
        // Changed: the day of the newest data (never before it was issued).
        let modified = span.map(|(_, end)| (end - chrono::Duration::days(1)).date_naive()).unwrap_or(issued).max(issued);
        let mut d = Node::named(id.clone(), &[v::DATASET_CLASS])
            .text(v::IDENTIFIER, id)
            .lang(v::TITLE, title, lang)
            .lang(v::DESCRIPTION, description, lang)
            .node(v::PUBLISHER, self.publisher.clone())
            .node(v::CONTACT_POINT, self.contact.clone())
            .iri(v::THEME, ENVIRONMENT_THEME);
        for k in keywords {
            d = d.lang(v::KEYWORD, k, lang);
        }
        d = d
            .iri(v::LANGUAGE, self.language)
            .iri(v::ACCRUAL, format!("{EU_FREQUENCY}{}", self.od.update_frequency))
            .typed(v::ISSUED, issued.to_string(), XSD_DATE)
            .typed(v::MODIFIED, modified.to_string(), XSD_DATE)
            .iri(v::GEOCODING, format!("{MUNICIPALITY_KEY}{}", self.od.municipality_key))
            .iri(v::GEOCODING_LEVEL, MUNICIPALITY_LEVEL)
            .iri(v::CONTRIBUTOR, format!("{CONTRIBUTORS}{}", self.od.contributor_id))
            .node(v::SPATIAL, spatial);
        if let Some((start, end)) = span {
            d = d.node(
                v::TEMPORAL,
                Node::blank(&[v::PERIOD]).typed(v::START_DATE, super::super::rfc3339(start), XSD_DATE_TIME).typed(
                    v::END_DATE,
                    super::super::rfc3339(end),
                    XSD_DATE_TIME,
                ),
            );
        }
        for dist in distributions {
            d = d.node(v::DISTRIBUTION, dist);
        }
        d
    }

    /// One download of a dataset.
    fn distribution(&self, dataset: &str, what: Download, url: String, licence: &str) -> Node {
        let (suffix, format, media) = match what {
            Download::HourlyJson => ("hourly-json", "JSON", "application/json"),
            Download::HourlyCsv => ("hourly-csv", "CSV", "text/csv"),
            Download::ReadingsJson => ("readings-json", "JSON", "application/json"),
            Download::ReadingsCsv => ("readings-csv", "CSV", "text/csv"),
        };
        let mut d = Node::named(format!("{dataset}/{suffix}"), &[v::DISTRIBUTION_CLASS])
            .lang(v::TITLE, self.texts.distribution_title(what), self.texts.tag())
            .iri(v::ACCESS_URL, url.clone())
            .iri(v::DOWNLOAD_URL, url)
            .iri(v::FORMAT, format!("{FILE_TYPE}{format}"))
            .iri(v::MEDIA_TYPE, format!("{IANA}{media}"))
            .iri(v::LICENSE, licence_uri(licence).unwrap_or(licence))
            .iri(v::LANGUAGE, self.language);
        if licence.contains("by") && !licence.contains("zero") {
            d = d.text(v::ATTRIBUTION, &self.od.attribution);
        }
        d
    }
}

fn district_dataset(
    c: &Common,
    district: &str,
    members: &[Arc<Device>],
    q: Quantity,
    span: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Node {
    let base = &c.od.base_url;
    let id = format!("{base}/v1/catalog#district/{}/{}", enc(district), q.name());
    let url = format!("{base}/v1/aggregates?district={}&quantity={}&interval=1h", enc(district), q.name());
    let lic = &c.od.district_licence;
    let issued = members.iter().filter_map(|d| d.installed).min().unwrap_or(c.od.issued);
    let spatial = Node::blank(&[v::LOCATION]).typed(v::BBOX, bbox(members, c.od.bbox_padding_m), WKT);
    let distributions = vec![
        c.distribution(&id, Download::HourlyJson, url.clone(), lic),
        c.distribution(&id, Download::HourlyCsv, format!("{url}&format=csv"), lic),
    ];
    c.dataset(
        id,
        c.texts.district_title(q, district),
        c.texts.district_description(q, district, members.len()),
        [c.texts.quantity(q), district.to_owned(), c.texts.topic().to_owned()],
        spatial,
        span,
        issued,
        distributions,
    )
}

fn device_dataset(c: &Common, d: &Device, q: Quantity, span: Option<(DateTime<Utc>, DateTime<Utc>)>) -> Node {
    let base = &c.od.base_url;
    let id = format!("{base}/v1/catalog#device/{}/{}", d.id, q.name());
    let readings = format!("{base}/v1/readings?device={}&quantity={}", d.id, q.name());
    let hourly = format!("{base}/v1/aggregates?device={}&quantity={}&interval=1h", d.id, q.name());
    let spatial = Node::blank(&[v::LOCATION]).typed(v::GEOMETRY, format!("POINT({} {})", num(d.lon), num(d.lat)), WKT);
    let distributions = vec![
        c.distribution(&id, Download::ReadingsJson, readings.clone(), &d.licence),
        c.distribution(&id, Download::ReadingsCsv, format!("{readings}&format=csv"), &d.licence),
        c.distribution(&id, Download::HourlyJson, hourly, &d.licence),
    ];
    c.dataset(
        id,
        c.texts.device_title(q, &d.name),
        c.texts.device_description(q, d.id.as_str(), &d.name, &d.district),
        [c.texts.quantity(q), d.district.clone(), c.texts.topic().to_owned()],
        spatial,
        span,
        d.installed.unwrap_or(c.od.issued),
        distributions,
    )
}

/// A coordinate with at most seven decimals (about 1 cm), without float noise.
fn num(x: f64) -> String {
    let r = (x * 1e7).round() / 1e7;
    format!("{r}")
}

/// The WKT polygon around `devices`, widened by `padding_m` on every side: a district with
/// one device (or all in a row) still covers an area.
pub fn bbox(devices: &[Arc<Device>], padding_m: f64) -> String {
    let (mut w, mut s, mut e, mut n) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for d in devices {
        w = w.min(d.lon);
        e = e.max(d.lon);
        s = s.min(d.lat);
        n = n.max(d.lat);
    }
    // Metres to degrees: 1° of latitude is about 111.32 km; a degree of longitude shrinks
    // with the cosine of the latitude (kept away from the poles' zero).
    let dlat = padding_m / 111_320.0;
    let dlon = padding_m / (111_320.0 * ((s + n) / 2.0).to_radians().cos().max(0.01));
    let (w, e) = ((w - dlon).max(-180.0), (e + dlon).min(180.0));
    let (s, n) = ((s - dlat).max(-90.0), (n + dlat).min(90.0));
    let (w, s, e, n) = (num(w), num(s), num(e), num(n));
    format!("POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))")
}

/// Percent-encode a query value (district names have spaces and umlauts).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The span a temporal coverage may claim: from the earliest plausible measurement time to
/// the end of the day after `now` (readings may be a few minutes ahead of the clock).
fn plausible_span(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (crate::quality::earliest_plausible(), day_start(now) + chrono::Duration::days(2))
}

fn day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Interval::Day.window_start(t.timestamp_millis())).unwrap_or(t)
}

/// Whole UTC days covering `[first, last]`, cut to `[floor, ceiling]`; `None` when nothing is left.
fn clamp_days(
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    floor: DateTime<Utc>,
    ceiling: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let start = day_start(first).max(floor);
    let end = day_start(last).checked_add_signed(chrono::Duration::days(1)).unwrap_or(ceiling).min(ceiling);
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn coverage_stays_within_real_years() {
        let (floor, ceiling) = plausible_span(at("2026-11-30T06:00:00Z"));
        assert_eq!((floor, ceiling), (at("2000-01-01T00:00:00Z"), at("2026-12-02T00:00:00Z")));
        let got = clamp_days(at("2026-11-01T10:00:00Z"), at("2026-11-30T05:00:00Z"), floor, ceiling);
        assert_eq!(got, Some((at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"))));
        let got = clamp_days(at("0001-01-01T00:00:00Z"), at("9999-12-31T23:59:59Z"), floor, ceiling);
        assert_eq!(got, Some((floor, ceiling)));
        assert_eq!(clamp_days(at("9999-12-31T00:00:00Z"), at("9999-12-31T00:00:00Z"), floor, ceiling), None);
        assert_eq!(clamp_days(at("0001-01-01T00:00:00Z"), at("0001-01-02T00:00:00Z"), floor, ceiling), None);
    }

    fn device(lat: f64, lon: f64) -> Arc<Device> {
        let text = format!(
            "[[device]]\nid = \"d\"\nname = \"D\"\nprofile = \"p\"\nlat = {lat}\nlon = {lon}\ndistrict = \"Mitte\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n"
        );
        let registry = crate::devices::DeviceRegistry::parse(std::path::Path::new("d.toml"), &text, |_| true).unwrap();
        let first = registry.iter().next().unwrap().clone();
        first
    }

    #[test]
    fn a_one_device_district_gets_an_area_not_a_point() {
        // 50 m is 0.000449° of latitude, and 0.000673° of longitude at 48.1° N.
        let b = bbox(&[device(48.1, 11.5)], 50.0);
        assert_eq!(b, "POLYGON((11.4993274 48.0995508, 11.5006726 48.0995508, 11.5006726 48.1004492, 11.4993274 48.1004492, 11.4993274 48.0995508))");
        // At the edge of the map the box is cut, never beyond ±180/±90.
        let b = bbox(&[device(90.0, 180.0)], 50.0);
        assert!(b.contains("180 90") && !b.contains("180.0"), "{b}");
    }

    #[test]
    fn page_urls_keep_the_clients_choices_and_the_first_is_the_catalogue() {
        let u = PageUrls { catalog: "https://x/v1/catalog".into(), keep: String::new() };
        assert_eq!((u.page(1), u.page(3)), ("https://x/v1/catalog".into(), "https://x/v1/catalog?page=3".into()));
        let u = PageUrls { catalog: "https://x/v1/catalog".into(), keep: "format=ttl&lang=en".into() };
        assert_eq!(u.page(1), "https://x/v1/catalog?format=ttl&lang=en");
        assert_eq!(u.page(2), "https://x/v1/catalog?page=2&format=ttl&lang=en");
        assert_eq!(u.numbered(1), "https://x/v1/catalog?page=1&format=ttl&lang=en");
    }
}
