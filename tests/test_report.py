"""ps.analytics.report and `persona report`: one self-contained, escaped HTML page; opened in headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

import persona as ps
from persona import analytics as pa
from persona.cli import main
from services import missing_service

HOSTILE = "<script>alert(1)</script>"
HOSTILE_EVENT = "<img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=250, n_items=60, seed=3)


@pytest.fixture(scope="module")
def hostile_events(shop):
    """The shop's events with a hostile item id (bought with popular items), event name, category and channel."""
    ev = shop.events.copy()
    ev["event"] = ev["event"].astype(str)
    buyers = ev.loc[ev["event"] == "purchase", "user_id"].unique()[:40]
    last = ev["timestamp"].max()
    extra = pd.DataFrame({"user_id": np.repeat(buyers, 3), "item_id": HOSTILE,
                          "event": np.tile(["view", "purchase", HOSTILE_EVENT], len(buyers)),
                          "timestamp": last - pd.to_timedelta(np.arange(3 * len(buyers)), unit="min"),
                          "value": 9.99, "session_id": -1})
    ev = pd.concat([ev, extra], ignore_index=True)
    ev["channel"] = np.where(np.arange(len(ev)) % 2, "web", "$\\frac{a}{b}$ <b>app</b>")
    return ev


def hostile_catalogue(shop):
    items = shop.items[["item_id", "category"]].copy()
    return pd.concat([items, pd.DataFrame({"item_id": [HOSTILE], "category": [HOSTILE + " & co"]})])


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


# ---------------------------------------------------------------------------------------------- the page
def test_the_report_is_one_self_contained_page_with_every_section(shop, tmp_path):
    out = pa.report(shop.events, tmp_path / "report.html", categories=shop.items, by="segment",
                    user_features=shop.users)
    assert out == tmp_path / "report.html" and list(tmp_path.iterdir()) == [out]  # no temporary file left
    assert out.stat().st_mode & 0o777 == 0o600  # the events may be personal: the owner's only
    page = out.read_text(encoding="utf-8")
    for heading in ("Summary", "Activity", "Funnel", "Cohort retention", "RFM segments", "Trends", "Basket affinity"):
        assert f"<h2>{heading}</h2>" in page
    assert "On-site recommendations" not in page  # a table of events has no impressions
    assert 'http-equiv="Content-Security-Policy"' in page and "default-src 'none'" in page
    assert "<script" not in page.lower() and not re.search(r"(src|href)=\"(?!data:|#)", page)
    assert "http://" not in page and "https://" not in page
    pngs = images(page)
    assert len(pngs) == page.count("<img ") >= 7 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    # the numbers shown are the analyses' numbers
    f = pa.funnel(shop.events, by="segment", user_features=shop.users)
    assert f"{int(f.loc[('students', 'view'), 'users']):,}" in page
    assert f"<b>{len(shop.events):,}</b>" in page
    assert "Not available" not in page
    assert pa.report(shop.events, None, sections=["summary"]).startswith("<!DOCTYPE html>")


def test_hostile_ids_names_and_values_are_escaped_everywhere(shop, hostile_events, tmp_path):
    page = pa.report(hostile_events, tmp_path / "r.html", title=HOSTILE, categories=hostile_catalogue(shop),
                     by="channel", basket="user",
                     extra=[(HOSTILE, pd.DataFrame({HOSTILE: [HOSTILE]}, index=pd.Index([HOSTILE], name=HOSTILE))),
                            ("text", HOSTILE), ("dict", {HOSTILE: HOSTILE})]).read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<img src=x" not in page and "<b>app" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert page.count(escaped) >= 8  # title, headings, the extra table and text, trends / rules / categories
    assert "&lt;img src=x onerror=alert(2)&gt;" in page  # the event name in the summary
    rules = pa.basket_rules(hostile_events, top_k=None)
    assert HOSTILE in set(rules["antecedent"]) | set(rules["consequent"])  # the id did reach the rules table
    assert all(p.startswith(b"\x89PNG") for p in images(page))  # TeX-like labels drew as text


def test_sections_and_extra_hook(shop, tmp_path):
    import matplotlib.figure

    fig = matplotlib.figure.Figure()
    fig.add_subplot().plot([1, 2, 3])
    seen = []

    def from_events(table):
        seen.append(table)
        return [("Per-user events", pd.Series(np.bincount(table.user_codes)).describe()), "computed from the table"]

    page = pa.report(shop.events, None, sections=["funnel", "summary"],
                     extra=[("A figure", fig), ("Callable", from_events), ("Numbers", {"a": 1, "b": 2.5})])
    heads = re.findall(r"<h2>([^<]*)</h2>", page)
    assert heads == ["Funnel", "Summary", "A figure", "Callable", "Numbers"]
    assert isinstance(seen[0], pa.EventTable) and len(seen[0]) == len(shop.events)
    assert "computed from the table" in page and "Per-user events" in page and page.count("<img ") == 2
    for bad in ("funnel", ["funnel", "ghost"]):
        with pytest.raises(ps.ParameterError, match="sections"):
            pa.report(shop.events, None, sections=bad)
    for bad in ([("no content",)], [(1, "x")], "x", [("t", object())]):
        with pytest.raises(ps.ParameterError, match="extra|cannot show"):
            pa.report(shop.events, None, sections=["summary"], extra=bad)
    with pytest.raises(ps.ParameterError, match="does not exist"):
        pa.report(shop.events, tmp_path / "missing" / "r.html", sections=["summary"])
    with pytest.raises(ps.DataError, match="no events"):
        pa.report(shop.events, None, since="2030-01-01")


def test_a_section_the_data_cannot_support_says_why_unless_asked_for(shop):
    no_events = ps.Interactions.from_frame(shop.events, user="user_id", item="item_id", time="timestamp")
    page = pa.report(no_events, None)
    assert re.search(r'<p class="note">Not available for these events: funnel needs event types', page)
    assert "<h2>Cohort retention</h2>" in page and "Not available for these events: cohort" not in page
    with pytest.raises(ps.DataError, match="funnel needs event types"):
        pa.report(no_events, None, sections=["funnel"])


def test_the_online_metrics_section_appears_for_a_store_when_the_function_exists(shop, tmp_path, monkeypatch):
    calls = []

    def online_metrics(store, since=None, until=None, events=None):
        calls.append((store, since, until, None if events is None else len(events)))
        return pd.DataFrame({"placement": ["home"], "ctr": [0.05]})

    monkeypatch.setitem(pa._NAMES, "online_metrics", "online")
    monkeypatch.setattr(pa, "online_metrics", online_metrics, raising=False)
    with ps.EventStore(tmp_path / "ev.db") as store:
        store.import_frame(shop.events.iloc[:3000], user="user_id", item="item_id", event="event", time="timestamp",
                           value="value")
        store.flush()
        page = pa.report(store, None, since="2024-01-02")
        assert calls == [(store, "2024-01-02", None, None)] and "<h2>On-site recommendations</h2>" in page
        assert "home" in page
        pa.report(store, None, sections=["online"])  # the events read for the report are passed on, not re-read
        assert calls[-1] == (store, None, None, 3000)
        table = pa.event_table(store)
        assert table.store is store
        pa.report(table, None, sections=["online"])  # an EventTable read from a store knows it
        assert calls[-1] == (store, None, None, 3000)
        pa.report(pa.event_table(store, since="2024-01-05"), None, sections=["online"])  # and its window
        assert calls[-1] == (store, "2024-01-05", None, None)
    assert "On-site" not in pa.report(shop.events.iloc[:3000], None)


def test_without_matplotlib_the_error_names_the_extra(shop, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ps.ParameterError, match=r"persona-recsys\[report\]"):
        pa.report(shop.events, None, sections=["activity"])


def test_import_persona_does_not_load_matplotlib():
    import subprocess

    code = "import sys, persona, persona.analytics; print('matplotlib' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


# ---------------------------------------------------------------------------------------------- the command
def test_persona_report_command(shop, tmp_path, capsys):
    db = tmp_path / "events.db"
    with ps.EventStore(db) as store:
        store.import_frame(shop.events, user="user_id", item="item_id", event="event", time="timestamp", value="value")
        store.flush()
    shop.items.to_csv(tmp_path / "items.csv", index=False)
    shop.users.to_csv(tmp_path / "users.csv", index=False)
    out = tmp_path / "report.html"
    assert main(["report", "--store", str(db), "--out", str(out), "--categories", str(tmp_path / "items.csv"),
                 "--users", str(tmp_path / "users.csv"), "--by", "segment", "--period", "month"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    assert "Trending categories" in page and "young_professionals" in page and len(images(page)) >= 7
    with pytest.raises(SystemExit, match="no event store"):
        main(["report", "--store", str(tmp_path / "nope.db"), "--out", str(out)])
    assert not (tmp_path / "nope.db").exists()  # never creates an empty store
    with pytest.raises(SystemExit, match="no 'category' column"):
        main(["report", "--store", str(db), "--categories", str(tmp_path / "users.csv")])
    with pytest.warns(UserWarning, match="'checkout'.* never occur"):
        assert main(["report", "--store", str(db), "--out", str(out), "--steps", "view,checkout"]) == 0
    assert main(["report", "--store", str(db), "--out", str(out), "--by", "nothing"]) == 0  # funnel shows why
    assert "no column, property or user feature &#x27;nothing&#x27;" in out.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------- in Chromium
def chrome_driver():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing_service("chromium", f"found chromium={chromium}, chromedriver={driver}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the Chromium test needs selenium: pip install '.[test]'", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions",
                "--allow-file-access-from-files", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def test_the_report_renders_in_headless_chromium_without_errors_or_alerts(shop, hostile_events, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    path = pa.report(hostile_events, tmp_path / "report.html", title=HOSTILE, categories=hostile_catalogue(shop),
                     by="channel")
    browser = chrome_driver()
    try:
        browser.set_page_load_timeout(30)
        browser.get(path.resolve().as_uri())
        assert browser.execute_script("return document.readyState") == "complete"
        assert browser.title == HOSTILE  # shown as text, never run
        imgs = browser.find_elements(By.TAG_NAME, "img")
        assert len(imgs) >= 7
        sizes = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert all(c and w > 0 and h > 0 for c, w, h in sizes), sizes
        assert browser.execute_script("return document.scripts.length") == 0
        assert HOSTILE in browser.find_element(By.TAG_NAME, "h1").text
        assert HOSTILE_EVENT in browser.find_element(By.ID, "s1").text  # the summary's events per type
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text
        logs = browser.get_log("browser")
        assert [e for e in logs if e.get("level") == "SEVERE"] == [], logs
    finally:
        browser.quit()
