//! The `[page]` section: the public page at `/` (map tiles and their attribution).

use serde::Deserialize;

/// The public page at `/` (`[page]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PageSettings {
    /// Map tiles as a URL template with `{z}`, `{x}` and `{y}`; absent (or empty) draws the
    /// devices on a plain background. The default is OpenStreetMap's tile server, whose usage
    /// policy asks for moderate use: a city portal should run or rent its own tile server.
    pub tile_url: Option<String>,
    /// Attribution shown under the map for the tiles (required by OpenStreetMap's licence).
    pub tile_attribution: String,
    /// Title of the page.
    pub title: String,
}

impl Default for PageSettings {
    fn default() -> Self {
        Self {
            tile_url: Some("https://tile.openstreetmap.org/{z}/{x}/{y}.png".into()),
            tile_attribution: "© OpenStreetMap contributors (openstreetmap.org/copyright)".into(),
            title: "Stadtklima-Messnetz".into(),
        }
    }
}

impl PageSettings {
    /// The tile template in use, if any.
    pub fn tiles(&self) -> Option<&str> {
        self.tile_url.as_deref().filter(|t| !t.trim().is_empty())
    }

    /// Every problem, as (key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        match self.tiles() {
            Some(t) if !(t.contains("{z}") && t.contains("{x}") && t.contains("{y}")) => {
                vec![("page.tile_url".into(), "expected a URL template with {z}, {x} and {y}".into())]
            }
            Some(t) if !(t.starts_with("https://") || t.starts_with("http://") || t.starts_with('/')) => {
                vec![("page.tile_url".into(), "expected an http(s) URL or a path on this server".into())]
            }
            _ => Vec::new(),
        }
    }
}
