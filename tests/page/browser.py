"""The public page in a real headless Chromium (driven by Selenium through chromedriver).

Usage: browser.py BASE_URL AXE_JS SCREENSHOT_DIR

Checks, after the README walkthrough's publish: the demo device shows 28.29 °C (German
28,29 °C), its chart renders, the language switch works, the keyboard reaches every control,
and axe-core finds no serious or critical WCAG 2.1 A/AA violation. Writes screenshots.
Exits non-zero with the reason on the first failure.
"""

import json
import sys

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

base, axe_path, shots = sys.argv[1], sys.argv[2], sys.argv[3]
WAIT_S = 15


def fail(message):
    print("page test failed: " + message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


options = webdriver.ChromeOptions()
for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1800",
             "--no-first-run", "--disable-extensions", "--lang=de-DE"]:
    options.add_argument(flag)
options.binary_location = "/usr/bin/chromium"
service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
driver = webdriver.Chrome(options=options, service=service)
driver.set_page_load_timeout(WAIT_S)
driver.set_script_timeout(60)
wait = WebDriverWait(driver, WAIT_S)
# axe-core is injected by the test; the page's Content-Security-Policy would refuse it.
driver.execute_cdp_cmd("Page.setBypassCSP", {"enabled": True})
axe_source = open(axe_path, encoding="utf-8").read()


def axe(label):
    driver.execute_script(axe_source)
    result = driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
        ".then(function (r) { done(JSON.stringify(r.violations)); }, function (e) { done(JSON.stringify([{id: 'axe-error', impact: 'critical', help: String(e)}])); });"
    )
    violations = json.loads(result)
    for v in violations:
        print(f"axe ({label}): {v.get('impact')}: {v['id']}: {v.get('help')}", file=sys.stderr)
    serious = [v for v in violations if v.get("impact") in ("serious", "critical")]
    check(not serious, f"{label}: axe reports {len(serious)} serious or critical violation(s): {[v['id'] for v in serious]}")
    return len(violations)


def text(css):
    return driver.find_element(By.CSS_SELECTOR, css).text.strip()


def keyboard_reaches_every_control(label):
    """Tab through the page from its start; every visible control must take the focus."""
    controls = driver.execute_script(
        "return Array.from(document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, [tabindex]'))"
        ".filter(function (e) { return e.tabIndex >= 0 && !e.disabled && e.getClientRects().length > 0; })"
        ".map(function (e, i) { e.setAttribute('data-kb', i); return i; });"
    )
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);")
    body = driver.find_element(By.TAG_NAME, "body")
    body.click()
    reached = set()
    for _ in range(len(controls) * 2 + 10):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        mark = driver.execute_script("var e = document.activeElement; return e ? e.getAttribute('data-kb') : null;")
        if mark is not None:
            reached.add(int(mark))
        if len(reached) == len(controls):
            break
    missing = driver.execute_script(
        "return arguments[0].map(function (i) { var e = document.querySelector('[data-kb=\"' + i + '\"]');"
        " return e.outerHTML.slice(0, 120); });",
        [i for i in controls if i not in reached],
    )
    check(not missing, f"{label}: the keyboard does not reach {missing}")
    print(f"{label}: Tab reaches all {len(controls)} controls")


try:
    # German by default: the server-rendered table and the map's point.
    driver.get(base + "/")
    check(driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "de", "the page is not German by default")
    cell = text("a.device-link[data-device='demo-lht65']")
    check("Rathausplatz" in cell, f"the table lacks the demo device: {cell!r}")
    temperature = driver.execute_script(
        "var link = document.querySelector(\"a.device-link[data-device='demo-lht65']\");"
        "var row = link.closest('tr'); var rows = [row]; var n = row.nextElementSibling;"
        "while (n && !n.querySelector('a.device-link')) { rows.push(n); n = n.nextElementSibling; }"
        "for (var r of rows) { var c = r.querySelector(\"td[data-quantity='air_temperature']\"); if (c) return c.textContent; }"
        "return null;"
    )
    check(temperature == "28,29 °C", f"the table shows {temperature!r} for the demo device, not 28,29 °C")
    point = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#map button.point[data-device='demo-lht65']"))
    check(point.text == "28,29 °C", f"the map point reads {point.text!r}")
    check("Rathausplatz" in point.get_attribute("aria-label"), "the map point has no text alternative")

    # Open the device with the keyboard; its values and chart appear.
    point.send_keys(Keys.ENTER)
    wait.until(lambda d: d.find_element(By.ID, "device").is_displayed())
    check(driver.switch_to.active_element.get_attribute("id") == "device-title", "focus does not move to the device")
    value = text("#device-body li[data-quantity='air_temperature'] strong")
    check(value == "28,29 °C", f"the device shows {value!r}")
    chart = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".chart-box[data-quantity='air_temperature'] svg[role='img']"))
    desc = chart.find_element(By.TAG_NAME, "desc").get_attribute("textContent")
    check("28,29" in desc, f"the chart's text alternative lacks the value: {desc!r}")
    check(len(chart.find_elements(By.CSS_SELECTOR, "path.line, circle")) >= 2, "the chart draws no data")
    links = driver.find_elements(By.CSS_SELECTOR, ".chart-box[data-quantity='air_temperature'] a[href*='format=csv']")
    check(links, "no CSV download link")
    driver.find_element(By.CSS_SELECTOR, "button[data-range='7d']").click()
    wait.until(lambda d: "7 Tage" in d.find_element(By.CSS_SELECTOR, ".chart-box[data-quantity='air_temperature'] svg desc").get_attribute("textContent"))
    driver.save_screenshot(f"{shots}/page-de.png")
    keyboard_reaches_every_control("German page with the device open")
    axe("German page with the device open")

    # A citizen registers a sensor through the form (decimal commas) and deletes it again.
    driver.find_element(By.ID, "reg-name").send_keys("Balkon Test")
    driver.find_element(By.ID, "reg-lat").send_keys("48,14")
    driver.find_element(By.ID, "reg-lon").send_keys("11,58")
    driver.find_element(By.ID, "reg-lon").send_keys(Keys.ENTER)
    codes = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#register-result code"))
    check(len(codes) == 2 and codes[0].text.startswith("c-") and codes[1].text.startswith(codes[0].text + "."),
          f"the registration shows no id and token: {[c.text for c in codes]}")
    sensor_id, token = codes[0].text, codes[1].text
    driver.find_element(By.ID, "del-id").send_keys(sensor_id)
    driver.find_element(By.ID, "del-token").send_keys(token)
    driver.find_element(By.ID, "del-token").send_keys(Keys.ENTER)
    wait.until(lambda d: "Gelöscht" in d.find_element(By.ID, "delete-result").text)

    # English through the language switch.
    driver.find_element(By.ID, "lang-switch").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en")
    check(text("#latest-title") == "Latest values", f"the English page's heading is {text('#latest-title')!r}")
    point = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#map button.point[data-device='demo-lht65']"))
    check(point.text == "28.29 °C", f"the English map point reads {point.text!r}")
    point.click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".chart-box[data-quantity='air_temperature'] svg"))
    check(text("#device-body li[data-quantity='air_temperature'] strong") == "28.29 °C", "English value")
    driver.save_screenshot(f"{shots}/page-en.png")
    keyboard_reaches_every_control("English page with the device open")
    axe("English page with the device open")
    # The whole page for the record: the window as tall as the document.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(height + 200, 8000))
    driver.save_screenshot(f"{shots}/page-en-full.png")
    driver.set_window_size(1280, 1800)
    # Escape closes the device and gives the focus back to the point.
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait.until(lambda d: not d.find_element(By.ID, "device").is_displayed())
    print("page test passed")
finally:
    driver.quit()
