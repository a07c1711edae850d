"""The review page in a real headless Chromium: an operator approves and edits by clicking."""

from __future__ import annotations

import shutil

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not __import__("os").environ.get("CI"),
    reason="Debian's chromium is not installed (scripts/test.sh installs it)",
)

ADMIN = "admin-secret"


@pytest.fixture()
def server(tmp_path, tiny_model_dir, model_cache, semantic_models):
    from tests.fixtures.server import LiveServer

    srv = LiveServer(tmp_path, model_cache, model=str(tiny_model_dir), env={"REFINERY_ADMIN_KEY": ADMIN}).start()
    yield srv
    srv.stop()


@pytest.fixture()
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser.new_page()
        browser.close()


def admin(server, method, path, **kw):
    r = httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120, **kw)
    r.raise_for_status()
    return r.json()


def test_operator_approves_and_edits_by_clicking(server, page, tmp_path):
    from service.learn.review import PrincipleBook
    from service.store import Store

    book = PrincipleBook(Store(server.data_dir / "refinery.db"))
    p = book.create({"text": "Do not use emojis in work emails", "domain": "work emails", "effect": "no emojis",
                     "source": "critique", "proposer": "rules"})
    other = book.create({"text": "Answer in French", "domain": "French lessons", "effect": "French", "source": "critique"})

    page.goto(server.url + "/review")
    page.fill("[data-testid=admin-key]", ADMIN)
    page.fill("[data-testid=operator]", "ana")
    page.click("[data-testid=refresh]")
    card = page.locator(f"[data-testid=principle][data-id='{p['id']}']")
    card.wait_for()
    assert card.locator("[data-testid=principle-text]").inner_text() == "Do not use emojis in work emails"
    assert page.locator("[data-testid=principle]").count() == 2

    card.locator("[data-testid=approve]").click()
    page.wait_for_function(
        "id => !document.querySelector(`[data-testid=principle][data-id='${id}']`)", arg=p["id"])
    assert admin(server, "GET", f"/admin/principles/{p['id']}")["status"] == "approved"
    assert admin(server, "GET", f"/admin/principles/{other['id']}")["status"] == "candidate"

    page.select_option("[data-testid=status-filter]", "approved")
    card = page.locator(f"[data-testid=principle][data-id='{p['id']}']")
    card.wait_for()
    card.locator("[data-testid=edit]").click()
    card.locator("[data-testid=edit-text]").fill("Never use emojis in emails to colleagues")
    card.locator("[data-testid=edit-domain]").fill("emails to colleagues")
    card.locator("[data-testid=edit-mode]").select_option("both")
    card.locator("[data-testid=save]").click()
    page.wait_for_function(
        "id => (document.querySelector(`[data-testid=principle][data-id='${id}'] [data-testid=principle-text]`) || {}).innerText === 'Never use emojis in emails to colleagues'",
        arg=p["id"])

    shown = admin(server, "GET", f"/admin/principles/{p['id']}")
    assert shown["text"] == "Never use emojis in emails to colleagues"
    assert shown["domain"] == "emails to colleagues" and shown["mode"] == "both"
    actions = [(a["action"], a["actor"]) for a in shown["audit"]]
    assert ("approve", "ana (review page)") in actions and ("edit", "ana (review page)") in actions
    # Filtering on agreement: these principles were never voted on, so none is left.
    page.fill("[data-testid=min-agreement]", "0.5")
    page.click("[data-testid=refresh]")
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent === '0 principle(s)'")
    page.screenshot(path=str(tmp_path / "review.png"))


def test_wrong_key_shows_an_error(server, page):
    page.goto(server.url + "/review")
    page.fill("[data-testid=admin-key]", "wrong")
    page.click("[data-testid=refresh]")
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent.startsWith('Error')")
    assert "incorrect admin key" in page.locator("[data-testid=status]").inner_text()


def chat(server, messages):
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": messages, "max_tokens": 4}, timeout=60)
    r.raise_for_status()
    return r.json()


def test_operator_writes_a_principle_previews_its_scope_and_corrects_a_label(server, page):
    import time

    for q in ("Why does the Moon have phases?", "How far away is the Andromeda galaxy?", "How do I bake sourdough bread?",
              "Write an email to my boss asking for Friday off"):
        chat(server, [{"role": "user", "content": q}])
    first = chat(server, [{"role": "user", "content": "What is the capital of Australia?"}])
    follow = chat(server, [{"role": "user", "content": "What is the capital of Australia?"},
                           {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
                           {"role": "user", "content": "No, that's wrong. It's Canberra."}])
    admin(server, "POST", "/admin/analyse")
    deadline = time.time() + 120  # the encoder's scope loads in the background at start-up
    while admin(server, "GET", "/admin/scope-preview", params={"domain": "x"})["scorer"] != "encoder":
        assert time.time() < deadline, "the encoder scope never loaded"
        time.sleep(1)

    page.goto(server.url + "/review")
    page.fill("[data-testid=admin-key]", ADMIN)
    page.click("[data-testid=refresh]")
    page.click("[data-testid=new-principle]")
    page.fill("[data-testid=new-text]", "When I ask about astronomy, begin with 'Star note:'")
    page.fill("[data-testid=new-domain]", "questions about astronomy")
    page.fill("[data-testid=new-checks]", 'starts_with "Star note:"')
    page.click("[data-testid=new-preview]")
    applies = page.locator("[data-testid=new-scope] [data-testid=scope-applies]")
    applies.wait_for()
    assert "Why does the Moon have phases?" in applies.inner_text()
    assert "sourdough" not in applies.inner_text()
    assert "sourdough" in page.locator("[data-testid=new-scope] [data-testid=scope-outside]").inner_text()
    page.click("[data-testid=new-create]")
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent === 'Created'")
    made = [p for p in admin(server, "GET", "/admin/principles")["data"] if p["domain"] == "questions about astronomy"]
    assert len(made) == 1 and made[0]["status"] == "candidate" and made[0]["checks"] == ['starts_with "Star note:"']
    card = page.locator(f"[data-testid=principle][data-id='{made[0]['id']}']")
    card.wait_for()
    card.locator("[data-testid=scope]").click()
    card.locator("[data-testid=scope-applies]").wait_for()
    assert "Andromeda" in card.locator("[data-testid=scope-applies]").inner_text()

    row = page.locator(f"[data-testid=natural-row][data-id='{follow['id']}']")
    row.wait_for()
    row.locator("[data-testid=natural-category]").select_option("aware_with_correction")
    row.locator("[data-testid=natural-save]").click()
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent === 'Label saved'")
    verdict = next(n for n in admin(server, "GET", "/admin/natural-feedback")["data"] if n["follow_up_id"] == follow["id"])
    assert verdict["category"] == "aware_with_correction" and verdict["labelled_by"] == "review-page"


def test_operator_rejects_a_correction_by_clicking(server, page):
    first = chat(server, [{"role": "user", "content": "What is the capital of Australia?"}])
    other = chat(server, [{"role": "user", "content": "How many legs has a spider?"}])
    fb = httpx.post(server.url + "/v1/feedback", json={"completion_id": first["id"], "thumb": "down",
                                                        "correction": "Canberra is the capital of Australia."},
                    timeout=60).json()
    kept = httpx.post(server.url + "/v1/feedback", json={"completion_id": other["id"], "correction": "Eight."},
                      timeout=60).json()

    page.goto(server.url + "/review")
    page.fill("[data-testid=admin-key]", ADMIN)
    page.fill("[data-testid=operator]", "ana")
    page.click("[data-testid=refresh]")
    row = page.locator(f"[data-testid=correction][data-id='{fb['id']}']")
    row.wait_for()
    assert page.locator("[data-testid=correction]").count() == 2
    assert "What is the capital of Australia?" in row.inner_text()
    assert "Canberra is the capital of Australia." in row.inner_text()
    assert row.locator("[data-testid=correction-status]").inner_text() == "accepted"
    assert row.locator("[data-testid=correction-accept]").is_disabled()

    row.locator("[data-testid=correction-reject]").click()
    page.wait_for_function(
        "id => (document.querySelector(`[data-testid=correction][data-id='${id}'] [data-testid=correction-status]`) || {}).innerText === 'rejected'",
        arg=fb["id"])
    assert page.locator("[data-testid=status]").inner_text() == "Correction rejected"
    statuses = {c["id"]: c["status"] for c in admin(server, "GET", "/admin/corrections")["data"]}
    assert statuses == {fb["id"]: "rejected", kept["id"]: "accepted"}
    [entry] = admin(server, "GET", "/admin/audit", params={"object_id": fb["id"]})["data"]
    assert (entry["action"], entry["actor"]) == ("reject", "ana (review page)")
    assert page.locator(f"[data-testid=correction][data-id='{fb['id']}'] [data-testid=correction-reject]").is_disabled()


def test_operator_accepts_an_edited_better_answer_by_clicking(server, page):
    from service.store import Store

    first = chat(server, [{"role": "user", "content": "What is the capital of Australia?"}])
    other = chat(server, [{"role": "user", "content": "What is DNS?"}])
    refinements = Store(server.data_dir / "refinery.db").refinements
    # Complaints of no stored feedback record, so the server's own analyst never samples for them.
    ref = refinements.add({"completion_id": first["id"], "source": "feedback", "source_id": "fb-e2e-capital",
                           "complaint": "wrong city"}, "Sydney is the capital.", True, "teacher", "the teacher prefers it")
    unverified = refinements.add({"completion_id": other["id"], "source": "feedback", "source_id": "fb-e2e-dns",
                                  "complaint": "far too long"}, None, False, None, "no answer came")

    page.goto(server.url + "/review")
    page.fill("[data-testid=admin-key]", ADMIN)
    page.fill("[data-testid=operator]", "ana")
    page.click("[data-testid=refresh]")
    row = page.locator(f"[data-testid=complaint][data-id='{ref['id']}']")
    row.wait_for()
    assert page.locator("[data-testid=complaint]").count() == 2
    assert "What is the capital of Australia?" in row.locator("[data-testid=complaint-request]").inner_text()
    ours = row.locator("[data-testid=complaint-response]").inner_text()
    assert ours.split() == first["choices"][0]["message"]["content"].split()
    assert "wrong city" in row.locator("[data-testid=complaint-text]").inner_text()
    assert row.locator("[data-testid=complaint-candidate]").input_value() == "Sydney is the capital."
    assert "teacher: the teacher prefers it" in row.locator("[data-testid=complaint-verification]").inner_text()
    assert row.locator("[data-testid=complaint-status]").inner_text() == "proposed"

    # An unverified one with nothing in the box: the server's refusal is shown and nothing changes.
    bare = page.locator(f"[data-testid=complaint][data-id='{unverified['id']}']")
    assert bare.locator("[data-testid=complaint-status]").inner_text() == "unverified"
    bare.locator("[data-testid=complaint-accept]").click()
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent.startsWith('Error')")
    assert "verification" in page.locator("[data-testid=status]").inner_text()

    row.locator("[data-testid=complaint-candidate]").fill("Canberra is the capital of Australia.")
    row.locator("[data-testid=complaint-accept]").click()
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent === 'Better answer accepted'")
    page.wait_for_function("id => !document.querySelector(`[data-testid=complaint][data-id='${id}']`)", arg=ref["id"])
    assert page.locator("[data-testid=complaint]").count() == 1  # the unverified one still waits

    shown = {r["id"]: r for r in admin(server, "GET", "/admin/refinements")["data"]}
    assert (shown[ref["id"]]["status"], shown[ref["id"]]["candidate"], shown[ref["id"]]["edited_by"]) == (
        "accepted", "Canberra is the capital of Australia.", "ana (review page)")
    assert shown[unverified["id"]]["status"] == "unverified"
    [entry] = admin(server, "GET", "/admin/audit", params={"object_id": ref["id"]})["data"]
    assert (entry["action"], entry["actor"]) == ("accept", "ana (review page)")
    assert admin(server, "GET", "/admin/audit", params={"object_id": unverified["id"]})["data"] == []

    bare.locator("[data-testid=complaint-reject]").click()
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent === 'Better answer rejected'")
    page.wait_for_function("!document.querySelector('[data-testid=complaint]')")
    assert admin(server, "GET", "/admin/refinements", params={"status": "rejected"})["data"][0]["id"] == unverified["id"]
