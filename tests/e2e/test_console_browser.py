"""The browser console in a real browser (contract §16, issue #18): Playwright
driving Debian's chromium against a real ``keystile serve``.

Every flow: sign-in (by keyboard), the session cookie's flags, create with the
secret shown once (reload, back and history never show it again), copy,
edit, disable / enable, rotate, revoke with confirmation, webhooks, the audit
log, CSRF refusal, pages without JavaScript, labels on every control, 375 px
and 1440 px, times in the viewer's offset. With ``CONSOLE_SCREENSHOTS=DIR``
(``make screenshots``) the tests also write the PNGs docs/console.md shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import LEDGER, cli_admin, keystile_env, serving

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")

# Every form control must have an accessible name from a <label>, and every
# button and link a text; the page must say its language and have one h1.
# (The label rules of axe-core, checked in the page.)
LABEL_AUDIT = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push("html has no lang");
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one h1");
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden") continue;
    const labelled = (el.labels && el.labels.length) || el.getAttribute("aria-label")
      || el.getAttribute("aria-labelledby");
    if (!labelled) problems.push("unlabelled " + el.outerHTML.slice(0, 80));
  }
  for (const el of document.querySelectorAll("button, a[href]")) {
    if (el.hidden) continue;
    if (!(el.textContent || "").trim() && !el.getAttribute("aria-label"))
      problems.push("nameless " + el.outerHTML.slice(0, 80));
  }
  const ids = [...document.querySelectorAll("[id]")].map((el) => el.id);
  if (new Set(ids).size !== ids.length) problems.push("duplicate ids");
  return problems;
}"""


def ensure_chromium() -> None:
    """Debian's chromium (Playwright's own download cannot run here)."""
    if CHROMIUM.exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update"], check=False, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"], check=False, capture_output=True, timeout=1200
        )
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing and could not be installed with apt")
        pytest.skip("chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    ensure_chromium()
    env = keystile_env(
        tmp_path_factory.mktemp("console"),
        KEYSTILE_WEBHOOK_ALLOW_HTTP="true",
        KEYSTILE_WEBHOOK_ALLOW_PRIVATE="true",
    )
    _, secret = cli_admin(
        env, "admin:api_keys", "admin:webhooks", "read:contacts", "write:contacts"
    )
    with serving(env) as url:
        yield str(url), secret


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 1440, "height": 900}, timezone_id="Asia/Kolkata"
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    tab = context.new_page()
    yield tab
    context.close()


def shot(page: object, name: str, *, full: bool = True) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=full)  # type: ignore[attr-defined]


def audit_labels(page: object) -> None:
    assert page.evaluate(LABEL_AUDIT) == []  # type: ignore[attr-defined]


def sign_in(page: object, url: str, secret: str) -> None:
    page.goto(f"{url}/console/sign-in")  # type: ignore[attr-defined]
    page.get_by_label("API key").fill(secret)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}/console/keys")  # type: ignore[attr-defined]


def create_key(page: object, url: str, name: str) -> str:
    page.goto(f"{url}/console/keys/new")  # type: ignore[attr-defined]
    page.get_by_label("Name", exact=True).fill(name)  # type: ignore[attr-defined]
    page.get_by_label("read:contacts").check()  # type: ignore[attr-defined]
    page.get_by_role("button", name="Create the key").click()  # type: ignore[attr-defined]
    secret: str = page.get_by_label("API key").input_value()  # type: ignore[attr-defined]
    LEDGER.remember(secret)
    return secret


def test_sign_in_by_keyboard_and_the_cookie_flags(page: object, server: tuple[str, str]) -> None:
    url, secret = server
    page.goto(f"{url}/console/sign-in")  # type: ignore[attr-defined]
    audit_labels(page)
    shot(page, "sign-in")
    page.keyboard.press("Tab")  # type: ignore[attr-defined]
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"  # type: ignore[attr-defined]
    for _ in range(5):
        if page.evaluate("document.activeElement.id") == "key":  # type: ignore[attr-defined]
            break
        page.keyboard.press("Tab")  # type: ignore[attr-defined]
    page.keyboard.type(secret)  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}/console/keys")  # type: ignore[attr-defined]
    cookies = {c["name"]: c for c in page.context.cookies()}  # type: ignore[attr-defined]
    session = cookies["keystile_console"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["secure"] is False  # plain http on loopback; https sets it (route tests)
    assert secret not in session["value"]
    assert page.evaluate("document.cookie") == ""  # type: ignore[attr-defined]
    audit_labels(page)
    page.get_by_role("button", name="Sign out").click()  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}/console/sign-in")  # type: ignore[attr-defined]
    page.goto(f"{url}/console/keys")  # type: ignore[attr-defined]
    assert page.url == f"{url}/console/sign-in"  # type: ignore[attr-defined]


def test_a_bad_key_is_refused(page: object, server: tuple[str, str]) -> None:
    url, _ = server
    page.goto(f"{url}/console/sign-in")  # type: ignore[attr-defined]
    page.get_by_label("API key").fill("wbk_live_notakey")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    assert page.get_by_role("alert").inner_text() == "That key is not valid."  # type: ignore[attr-defined]


def test_the_secret_is_shown_once(page: object, server: tuple[str, str]) -> None:
    url, secret = server
    sign_in(page, url, secret)
    page.goto(f"{url}/console/keys/new")  # type: ignore[attr-defined]
    audit_labels(page)
    shot(page, "create-key")
    new_secret = create_key(page, url, "billing worker")
    assert new_secret.startswith("wbk_live_")
    assert "shown only this once" in page.inner_text("main")  # type: ignore[attr-defined]
    audit_labels(page)
    shot(page, "secret-shown-once")
    secret_url = page.url  # type: ignore[attr-defined]
    page.get_by_role("button", name="Copy").click()  # type: ignore[attr-defined]
    page.get_by_text("Copied.").wait_for()  # type: ignore[attr-defined]
    assert page.evaluate("navigator.clipboard.readText()") == new_secret  # type: ignore[attr-defined]
    page.reload()  # type: ignore[attr-defined]
    assert new_secret not in page.content()  # type: ignore[attr-defined]
    assert "not shown again" in page.inner_text("main")  # type: ignore[attr-defined]
    page.go_back()  # type: ignore[attr-defined]
    assert new_secret not in page.content()  # type: ignore[attr-defined]
    page.go_forward()  # type: ignore[attr-defined]
    assert new_secret not in page.content()  # type: ignore[attr-defined]
    page.goto(secret_url)  # type: ignore[attr-defined]
    assert new_secret not in page.content()  # type: ignore[attr-defined]


def test_errors_are_shown_next_to_the_field(page: object, server: tuple[str, str]) -> None:
    url, secret = server
    sign_in(page, url, secret)
    page.goto(f"{url}/console/keys/new")  # type: ignore[attr-defined]
    page.get_by_label("Name", exact=True).fill("admin")  # type: ignore[attr-defined]
    page.get_by_label("read:contacts").check()  # type: ignore[attr-defined]
    page.get_by_label("Expires at (optional)").fill("next tuesday")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Create the key").click()  # type: ignore[attr-defined]
    field = page.locator("#expires_at")  # type: ignore[attr-defined]
    assert field.get_attribute("aria-invalid") == "true"
    assert page.locator("#expires_at-error").is_visible()  # type: ignore[attr-defined]
    audit_labels(page)
    shot(page, "create-key-error")


def test_csrf_refusal(page: object, server: tuple[str, str]) -> None:
    url, secret = server
    sign_in(page, url, secret)
    page.goto(f"{url}/console/keys/new")  # type: ignore[attr-defined]
    page.get_by_label("Name", exact=True).fill("forged")  # type: ignore[attr-defined]
    page.get_by_label("read:contacts").check()  # type: ignore[attr-defined]
    page.evaluate("document.querySelector('form.card [name=csrf_token]').value = 'forged'")  # type: ignore[attr-defined]
    with page.expect_response(f"{url}/console/keys/new") as answered:  # type: ignore[attr-defined]
        page.get_by_role("button", name="Create the key").click()  # type: ignore[attr-defined]
    assert answered.value.status == 403
    page.goto(f"{url}/console/keys?name=forged")  # type: ignore[attr-defined]
    assert "No keys match." in page.inner_text("main")  # type: ignore[attr-defined]


def test_edit_disable_rotate_revoke(page: object, server: tuple[str, str]) -> None:
    url, secret = server
    sign_in(page, url, secret)
    create_key(page, url, "lifecycle")
    page.get_by_role("link", name="I have copied it").click()  # type: ignore[attr-defined]
    detail = page.url  # type: ignore[attr-defined]
    assert page.locator("figure.chart svg").count() == 1  # type: ignore[attr-defined]
    audit_labels(page)
    page.get_by_role("link", name="Edit").click()  # type: ignore[attr-defined]
    page.get_by_label("Description (optional)").fill("renamed by the console")  # type: ignore[attr-defined]
    page.get_by_label("Metadata (optional)").fill("team=billing")  # type: ignore[attr-defined]
    audit_labels(page)
    page.get_by_role("button", name="Save").click()  # type: ignore[attr-defined]
    page.wait_for_url(detail)  # type: ignore[attr-defined]
    assert "renamed by the console" in page.inner_text("main")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Disable").click()  # type: ignore[attr-defined]
    assert "disabled" in page.locator("h1").inner_text()  # type: ignore[attr-defined]
    page.get_by_role("button", name="Enable").click()  # type: ignore[attr-defined]
    assert "active" in page.locator("h1").inner_text()  # type: ignore[attr-defined]
    shot(page, "key-detail")
    page.get_by_role("link", name="Rotate").click()  # type: ignore[attr-defined]
    audit_labels(page)
    page.get_by_label("1 day").check()  # type: ignore[attr-defined]
    page.get_by_role("button", name="Rotate").click()  # type: ignore[attr-defined]
    rotated = page.get_by_label("API key").input_value()  # type: ignore[attr-defined]
    LEDGER.remember(rotated)
    page.get_by_role("link", name="I have copied it").click()  # type: ignore[attr-defined]
    page.get_by_role("link", name="Revoke").click()  # type: ignore[attr-defined]
    audit_labels(page)
    page.get_by_label("Type the key's name to confirm").fill("wrong")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Revoke the key").click()  # type: ignore[attr-defined]
    assert page.locator("#confirm-error").is_visible()  # type: ignore[attr-defined]
    page.get_by_label("Type the key's name to confirm").fill("lifecycle")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Revoke the key").click()  # type: ignore[attr-defined]
    assert "revoked" in page.locator("h1").inner_text()  # type: ignore[attr-defined]
    page.goto(detail)  # type: ignore[attr-defined]
    text = page.inner_text("main")  # type: ignore[attr-defined]
    assert "api_key.rotated" in text and "api_key.updated" in text
    assert "Replaced by" in text


def test_keys_list_search_and_filter(page: object, server: tuple[str, str]) -> None:
    url, secret = server
    sign_in(page, url, secret)
    create_key(page, url, "searchable")
    page.goto(f"{url}/console/keys")  # type: ignore[attr-defined]
    page.get_by_label("Name (exact)").fill("searchable")  # type: ignore[attr-defined]
    page.get_by_label("Status").select_option("active")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Filter").click()  # type: ignore[attr-defined]
    rows = page.locator("tbody tr")  # type: ignore[attr-defined]
    assert rows.count() == 1 and "searchable" in rows.inner_text()
    page.goto(f"{url}/console/keys")  # type: ignore[attr-defined]
    audit_labels(page)
    shot(page, "keys")
    # Times in the viewer's offset (Asia/Kolkata here), the UTC value on hover.
    first = page.locator("tbody time").first  # type: ignore[attr-defined]
    assert "(UTC+05:30)" in first.inner_text()
    assert first.get_attribute("title").endswith("Z (UTC)")


def test_readable_at_375_px(browser: object, server: tuple[str, str]) -> None:
    url, secret = server
    context = browser.new_context(viewport={"width": 375, "height": 800})  # type: ignore[attr-defined]
    page = context.new_page()
    sign_in(page, url, secret)
    for path in ("/console/keys", "/console/keys/new", "/console/audit", "/console/webhooks"):
        page.goto(url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (path, width)
    page.goto(f"{url}/console/keys")
    shot(page, "keys-375px")
    context.close()


def test_everything_but_copy_works_without_javascript(
    browser: object, server: tuple[str, str]
) -> None:
    url, secret = server
    context = browser.new_context(java_script_enabled=False)  # type: ignore[attr-defined]
    page = context.new_page()
    sign_in(page, url, secret)
    new_secret = create_key(page, url, "no script")
    assert new_secret.startswith("wbk_live_")
    assert not page.get_by_role("button", name="Copy").is_visible()
    page.get_by_role("link", name="I have copied it").click()
    page.get_by_role("button", name="Disable").click()
    assert "disabled" in page.locator("h1").inner_text()
    page.get_by_role("link", name="Revoke").click()
    page.get_by_label("Type the key's name to confirm").fill("no script")
    page.get_by_role("button", name="Revoke the key").click()
    assert "revoked" in page.locator("h1").inner_text()
    assert "UTC" in page.locator("time").first.inner_text()  # UTC when no script runs
    context.close()


def test_webhooks_and_the_audit_log(page: object, server: tuple[str, str]) -> None:
    url, secret = server
    sign_in(page, url, secret)
    page.goto(f"{url}/console/webhooks/new")  # type: ignore[attr-defined]
    audit_labels(page)
    page.get_by_label("URL").fill("http://127.0.0.1:9/hooks")  # type: ignore[attr-defined]
    page.get_by_label("api_key.created").check()  # type: ignore[attr-defined]
    page.get_by_role("button", name="Add the endpoint").click()  # type: ignore[attr-defined]
    signing = page.get_by_label("Signing secret").input_value()  # type: ignore[attr-defined]
    LEDGER.remember(signing)
    assert signing.startswith("whsec_")
    page.get_by_role("link", name="I have copied it").click()  # type: ignore[attr-defined]
    endpoint = page.url  # type: ignore[attr-defined]
    create_key(page, url, "fires an event")
    page.goto(endpoint)  # type: ignore[attr-defined]
    for _ in range(20):
        if "api_key.created" in page.inner_text("main"):  # type: ignore[attr-defined]
            break
        page.wait_for_timeout(250)  # type: ignore[attr-defined]
        page.reload()  # type: ignore[attr-defined]
    assert "api_key.created" in page.inner_text("main")  # type: ignore[attr-defined]
    audit_labels(page)
    shot(page, "webhook")
    page.goto(f"{url}/console/audit")  # type: ignore[attr-defined]
    page.get_by_label("Action").fill("webhook_endpoint.created")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Filter").click()  # type: ignore[attr-defined]
    rows = page.locator("tbody tr")  # type: ignore[attr-defined]
    assert rows.count() == 1 and "webhook_endpoint.created" in rows.inner_text()
    page.get_by_label("Since").fill("yesterday")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Filter").click()  # type: ignore[attr-defined]
    assert page.locator("#since-error").is_visible()  # type: ignore[attr-defined]
    page.goto(f"{url}/console/audit")  # type: ignore[attr-defined]
    audit_labels(page)
    shot(page, "audit")
    page.goto(endpoint)  # type: ignore[attr-defined]
    page.get_by_role("link", name="Delete").click()  # type: ignore[attr-defined]
    page.get_by_role("button", name="Delete the endpoint").click()  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}/console/webhooks")  # type: ignore[attr-defined]
    assert "No endpoints yet." in page.inner_text("main")  # type: ignore[attr-defined]
