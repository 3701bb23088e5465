"""Every user journey of the studio, in a real browser, asserted on what the page shows."""

import csv
import io
import re

from PIL import Image as PILImage

from tests.support import PHONE, balance, generate, photo, screenshot, sign_up, staff_page

# Records, in order, what the live view changes: progress values, preview images, final images.
WATCH_LIVE_VIEW = """
window.__live = [];
new MutationObserver((changes) => {
  for (const change of changes) {
    const el = change.target;
    if (el.id === "preview" && change.attributeName === "src") __live.push(["preview", el.getAttribute("src")]);
    if (el.id === "progress" && change.attributeName === "value") __live.push(["progress", Number(el.value)]);
    if (el.id === "images" && change.type === "childList") __live.push(["images", el.querySelectorAll("img").length]);
  }
}).observe(document, {subtree: true, attributes: true, childList: true, attributeFilter: ["src", "value"]});
"""


# Keeps every WebSocket the page opens in window.__sockets, so a journey can drop one.
KEEP_SOCKETS = """
window.__sockets = [];
const OriginalWebSocket = window.WebSocket;
window.WebSocket = function (...args) { const s = new OriginalWebSocket(...args); window.__sockets.push(s); return s; };
window.WebSocket.prototype = OriginalWebSocket.prototype;
window.__heard = [];  // the types of the messages the page's sockets received
const originalOnmessage = Object.getOwnPropertyDescriptor(OriginalWebSocket.prototype, "onmessage");
Object.defineProperty(OriginalWebSocket.prototype, "onmessage", {
  set(handler) { originalOnmessage.set.call(this, (e) => { window.__heard.push(JSON.parse(e.data).type); handler(e); }); },
  get() { return originalOnmessage.get.call(this); },
});
"""


def test_1_a_newcomer_signs_up_generates_two_variants_and_watches_them_form(new_page):
    page = new_page()
    page.add_init_script(WATCH_LIVE_VIEW)
    sign_up(page)
    assert balance(page) == 100
    page.get_by_label("Prompt", exact=True).fill("a lighthouse on a cliff at dusk")
    page.get_by_label("Steps").fill("40")
    page.get_by_label("Images").fill("2")
    cost = int(page.locator("#cost").text_content())
    assert cost == 1
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("document.querySelectorAll('#images img').length == 2")
    live = page.evaluate("window.__live")
    images_at = next(i for i, (kind, value) in enumerate(live) if kind == "images" and value)
    previews = {value for kind, value in live[:images_at] if kind == "preview"}
    progress = [value for kind, value in live[:images_at] if kind == "progress"][:-1]  # then "done": 1 of 1
    assert len(previews) >= 2, "the preview changed at least twice before the images"
    assert len(set(progress)) >= 3 and progress == sorted(progress), "the progress bar advanced"
    assert page.locator("#status").text_content() == "Status: succeeded"
    screenshot(page, "1-studio-finished")
    page.reload()
    assert balance(page) == 100 - cost


def test_2_image_page_settings_variants_and_keeping_one(new_page):
    page = new_page()
    sign_up(page)
    job = generate(page, prompt="a castle in fog, (towers:1.2)", steps=5, images=2)
    seeds = [int(s) for s in re.findall(r"Seed (\d+)", page.locator("#images").inner_text())]
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    params = page.locator(".params-list").inner_text()
    for text in (str(seeds[0]), "256×256", "Euler a", "7.0", "sdweb-test-tiny"):
        assert text in params
    assert "a castle in fog, (towers:1.2)" in page.locator(".prompt").inner_text()
    screenshot(page, "2-image-page")

    page.get_by_role("link", name="Use these settings").click()
    assert page.get_by_label("Prompt", exact=True).input_value() == "a castle in fog, (towers:1.2)"
    assert page.get_by_label("Seed", exact=True).input_value() == str(seeds[0])
    assert page.get_by_label("Steps").input_value() == "5"
    page.go_back()

    assert page.get_by_role("button", name=re.compile(r"More variants \(2, new seeds\) · \d+ credits?$")).is_visible()
    page.get_by_role("button", name=re.compile("More variants")).click()
    page.wait_for_url("**/jobs/*/")
    assert job not in page.url
    page.wait_for_function("document.querySelectorAll('#images img').length == 2")
    new_seeds = [int(s) for s in re.findall(r"Seed (\d+)", page.locator("#images").inner_text())]
    assert len(new_seeds) == 2 and not set(new_seeds) & set(seeds)

    page.locator("#images input[type=checkbox]").nth(1).uncheck()
    page.get_by_role("button", name="Keep the checked, discard the rest").click()
    assert page.dialogs == ["Delete 1 of 2 images for good? This can't be undone."]  # dismissed: nothing deleted
    assert page.locator("#images img").count() == 2
    page.evaluate("window.confirm = () => true")  # this time the answer is yes
    page.get_by_role("button", name="Keep the checked, discard the rest").click()
    assert page.locator(".message").inner_text() == "Kept 1, discarded 1."
    assert page.locator("#images img").count() == 1
    page.goto("/gallery/")
    assert page.locator(".thumbs img").count() == 3


def test_3_a_public_image_is_found_by_a_visitor_until_it_is_private_again(new_page):
    owner = new_page()
    sign_up(owner)
    generate(owner, prompt="a shared sunrise over dunes", steps=3, images=1)
    owner.locator("#images a").first.click()
    owner.get_by_role("button", name="Make public").click()
    share_url = owner.locator("a[href*='/s/']").get_attribute("href")
    file_url = owner.locator("img.full").get_attribute("src")

    visitor = new_page(phone=True)
    visitor.goto("/explore/")
    assert visitor.locator(f"a[href='{share_url}']").count() == 1
    visitor.locator(f"a[href='{share_url}']").click()  # the lightbox shows it large, then its page
    visitor.get_by_role("dialog", name="Image").get_by_role("link", name="Open its page").click()
    assert "a shared sunrise over dunes" in visitor.locator(".prompt").inner_text()
    screenshot(visitor, "3-share-page")
    download = visitor.request.get(file_url)
    assert download.status == 200
    copy = io.BytesIO()
    PILImage.open(io.BytesIO(download.body())).convert("RGB").save(copy, format="JPEG", quality=90)
    jpeg = {"name": "found.jpg", "mimeType": "image/jpeg", "buffer": copy.getvalue()}

    def verify():  # a visitor asks "was this made here?" about a JPEG copy
        visitor.get_by_role("link", name="Was an image made here? Verify it").click()
        visitor.get_by_label("Image").set_input_files(jpeg)
        visitor.get_by_role("button", name="Check").click()
        return visitor.locator(".verdict")

    verdict = verify()
    assert verdict.get_by_role("heading").inner_text() == "Made here"
    assert verdict.get_by_role("link", name="its page").get_attribute("href") == share_url
    assert "a shared sunrise" not in verdict.inner_text()  # never the prompt
    screenshot(visitor, "3-verify")

    owner.get_by_role("button", name="Make private").click()
    assert "Private again" in owner.locator(".message").inner_text()
    assert visitor.goto(share_url).status == 404
    assert visitor.request.get(file_url).status == 404
    visitor.goto("/explore/")
    assert visitor.locator(f"a[href='{share_url}']").count() == 0
    verdict = verify()
    assert "Its maker has not shared it." in verdict.inner_text() and verdict.get_by_role("link").count() == 0
    unrelated = io.BytesIO()  # a photo of the visitor's own
    photo(77).save(unrelated, format="JPEG", quality=90)
    jpeg = {"name": "holiday.jpg", "mimeType": "image/jpeg", "buffer": unrelated.getvalue()}
    verdict = verify()
    assert verdict.get_by_role("heading").inner_text() == "Not made here, as far as we can tell"
    assert verdict.inner_text().count("No sign of this studio") == 1


def test_4_a_waiting_job_counts_the_running_one_and_cancelling_updates_the_whole_page(new_page):
    page = new_page()
    page.add_init_script(KEEP_SOCKETS)
    sign_up(page)
    generate(page, prompt="a very slow painting", steps=150, images=1, size=512, wait=False)
    page.wait_for_function("document.getElementById('progress').value >= 2")
    assert balance(page) == 95
    page.evaluate("window.__sockets.at(-1).close()")  # the connection drops: no stale time left is shown
    page.wait_for_function("document.getElementById('eta').textContent === 'Reconnecting…'")
    page.wait_for_function("document.getElementById('eta').textContent.startsWith('Step ')")  # and it resumes
    other = new_page()  # another user's job waits behind the running one, and says so
    other.add_init_script(KEEP_SOCKETS)
    sign_up(other)
    generate(other, prompt="a quick sketch", steps=2, images=1, wait=False)
    other.wait_for_function("document.getElementById('eta').textContent.startsWith('Queued · 1 job ahead')")
    # ...and hears its place and ETA again while it waits, not only when someone's job starts
    other.wait_for_function("window.__heard.filter((type) => type === 'queued').length >= 2", timeout=10_000)
    assert other.locator("#eta").inner_text().startswith("Queued · 1 job ahead")

    page.get_by_role("button", name="Cancel").click()
    page.wait_for_function("document.querySelector('#status strong')?.textContent === 'cancelled'")
    assert page.locator("#note").inner_text() == "Cancelled; the credits are back."
    assert page.locator("#error").is_hidden()  # an answer, not an error
    page.wait_for_function("document.getElementById('balance').textContent === '100'")  # no reload needed
    assert page.locator("table.jobs .status").first.inner_text() == "cancelled"  # recent jobs followed
    screenshot(page, "4-cancelled")
    other.wait_for_function("document.querySelectorAll('#images img').length == 1")  # it ran next
    assert other.locator("table.jobs .status").first.inner_text() == "succeeded"


def test_4b_deleting_asks_first_and_error_pages_are_the_sites_own(new_page):
    page = new_page(phone=True)
    sign_up(page)
    generate(page, prompt="a thing to delete", steps=2, images=1)
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    image_url = page.url
    page.get_by_role("link", name="Delete image…").click()
    assert "can't be undone" in page.locator("main").inner_text()
    page.get_by_role("link", name="Keep it").click()
    assert page.url == image_url
    page.get_by_role("link", name="Delete image…").click()
    page.get_by_role("button", name="Delete for good").click()
    assert "Image deleted." in page.locator(".message").inner_text()
    response = page.goto(image_url)
    assert response.status == 404 and page.get_by_role("heading", name="Not found").is_visible()
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Generate").is_visible()
    page.goto("/account/")
    page.get_by_label("New key's name").fill("a key with a long name for a phone")
    page.get_by_role("button", name="Create API key").click()
    page.goto("/account/")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
    screenshot(page, "4b-account-phone")


def test_5_reloading_mid_generation_resumes_the_progress(new_page):
    page = new_page()
    page.add_init_script(WATCH_LIVE_VIEW)
    sign_up(page)
    generate(page, prompt="a long exposure of a city", steps=60, images=1, size=512, wait=False)
    page.wait_for_function("document.getElementById('progress').value >= 10")
    before = page.evaluate("document.getElementById('progress').value")
    page.reload()
    # Straight from the page and its first message, not from zero: from the step last saved, which
    # is at most SDWEB_PROGRESS_SAVE_SECONDS (1 s) old, then on from the live previews.
    assert int(page.locator("#progress").get_attribute("value")) >= before / 2
    page.wait_for_function(f"document.getElementById('progress').value > {before}")
    assert page.locator("#preview").is_visible()
    screenshot(page, "5-running")
    page.wait_for_function("document.querySelectorAll('#images img').length == 1", timeout=180_000)
    progress = [value for kind, value in page.evaluate("window.__live") if kind == "progress"][:-1]
    assert min(progress) >= before / 2 and progress == sorted(progress)  # never backwards once resumed


def test_6_an_admin_reviews_the_prompt_audit_filters_by_user_and_exports_csv(new_page, studio):
    user = new_page()
    name = sign_up(user)
    generate(user, prompt="an accepted harb\u043eur", steps=2, images=1)  # a Cyrillic о, as a disguise would
    user.goto("/generate/")
    user.get_by_label("Prompt", exact=True).fill("a cat AND a dog")
    user.get_by_label("Width").fill("300")
    user.get_by_role("button", name="Generate").click()
    errors = user.locator(".field.invalid .error").all_inner_texts()  # every problem in one round
    assert any("Prompt uses AND (composable prompts), which is not supported yet" in e for e in errors)
    assert any("Width must be a multiple of 8" in e for e in errors), errors

    admin = staff_page(new_page, studio, "boss")
    admin.goto("/admin/generation/promptaudit/")
    admin.locator("#result_list").get_by_role("link", name=name, exact=True).first.click()  # a name filters
    rows = admin.locator("#result_list tbody tr")
    assert rows.count() == 2
    table = admin.locator("#result_list").inner_text()
    assert "an accepted harb\u043eur" in table and "a cat AND a dog" in table
    assert "accepted" in table and "refused" in table
    screenshot(admin, "6-audit")
    admin.goto("/admin/generation/promptaudit/?q=harbour")  # typed plainly, it finds the disguised spelling
    assert "an accepted harb\u043eur" in admin.locator("#result_list").inner_text()
    admin.goto("/admin/generation/promptaudit/?q=not+supported+yet")  # and the reasons
    assert "a cat AND a dog" in admin.locator("#result_list").inner_text()
    admin.goto("/admin/generation/promptaudit/")
    admin.locator("#result_list").get_by_role("link", name=name, exact=True).first.click()  # a name filters
    with admin.expect_download() as download:
        admin.get_by_role("link", name="Export these rows as CSV").click()
    exported = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert {r["username"] for r in exported} == {name}
    assert sorted(r["decision"] for r in exported) == ["accepted", "refused"]


def test_7_hostile_prompts_render_as_text_everywhere_and_pages_carry_security_headers(new_page, studio):
    page = new_page()
    sign_up(page)
    script, onerror = '<script>alert("s1")</script>', '<img src=x onerror=alert("s2")>'
    job = generate(page, prompt=f"{script} {onerror}", steps=2, images=1)
    assert script in page.locator(".prompt").inner_text()
    page.locator("#images a").first.click()
    page.get_by_role("button", name="Make public").click()
    share_url = page.locator("a[href*='/s/']").get_attribute("href")
    visited = [page.url]
    for path in (f"/jobs/{job}/", "/gallery/", f"/gallery/?q={onerror}", "/explore/", share_url, "/account/"):
        page.goto(path)
        visited.append(page.url)
        assert script in page.content().replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
    admin = staff_page(new_page, studio, "boss7")
    admin.goto("/admin/generation/promptaudit/?q=alert")
    assert script in admin.locator("#result_list").inner_text()
    admin.locator("#result_list tbody a").first.click()
    admin.goto("/admin/generation/job/")
    admin.locator("#result_list tbody a").first.click()
    assert page.dialogs == [] and admin.dialogs == []

    for path in ("/", "/generate/", "/gallery/", "/explore/", share_url, "/accounts/login/", "/admin/"):
        response = page.request.get(path)
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        assert response.headers["x-frame-options"] == "DENY", path
    session = next(c for c in page.context.cookies() if c["name"] == "sessionid")
    assert session["httpOnly"] is True


def test_8_a_user_makes_an_api_key_uses_it_from_a_script_and_revokes_it(new_page):
    page = new_page()
    sign_up(page)
    page.goto("/account/")
    assert "No API keys" in page.locator("main").inner_text()
    page.get_by_label("New key's name").fill("my bot")
    page.get_by_role("button", name="Create API key").click()
    key = page.locator("#new-key").inner_text()
    screenshot(page, "8-api-key")
    script = page.context.browser.new_context(base_url=page.url).request  # no cookies: a script
    job = script.post("/api/v1/jobs/", headers={"Authorization": f"Bearer {key}"},
                      data={"prompt": "a bot's lighthouse", "width": 256, "height": 256, "steps": 3})
    assert job.status == 201
    page.goto(f"/jobs/{job.json()['id']}/")
    page.wait_for_function("document.querySelectorAll('#images img').length == 1")
    page.goto("/account/")
    assert key not in page.content()  # shown once
    page.get_by_role("button", name="Revoke").click()
    assert script.get("/api/v1/credits/", headers={"Authorization": f"Bearer {key}"}).status == 401
    page.goto("/api/docs/")
    page.wait_for_selector(".swagger-ui .opblock")  # the docs render from our own files
    assert page.dialogs == []


def share_an_image(page, prompt) -> tuple[str, str]:
    """Sign up, make one image and publish it: (share URL, file URL)."""
    sign_up(page)
    generate(page, prompt=prompt, steps=2, images=1)
    page.locator("#images a").first.click()
    page.get_by_role("button", name="Make public").click()
    return page.locator("a[href*='/s/']").get_attribute("href"), page.locator("img.full").get_attribute("src")


def test_9_a_visitor_reports_an_image_and_staff_hide_it_from_the_moderation_queue(new_page, studio):
    owner = new_page()
    share_url, _ = share_an_image(owner, "a reported seascape")
    visitor = new_page(phone=True)
    visitor.goto(share_url)
    visitor.get_by_text("Report this image").click()
    visitor.get_by_label("What is wrong with it?").fill("it shows a real person")
    visitor.get_by_role("button", name="Send report").click()
    assert "staff will look at this image" in visitor.locator(".message").inner_text()

    staff = staff_page(new_page, studio, "moderator9")
    staff.goto("/staff/dashboard/")
    staff.get_by_role("link", name="open reports").click()
    staff.wait_for_url("**/admin/gallery/report/**")
    row = staff.locator("#result_list tbody tr", has_text="it shows a real person")
    assert row.count() == 1 and row.locator("img").count() == 1
    staff.set_viewport_size({"width": 1366, "height": 768})  # a common laptop: every column in view
    outcome = staff.get_by_role("columnheader", name="Outcome").bounding_box()
    assert outcome["x"] + outcome["width"] <= 1366
    screenshot(staff, "9-moderation-queue")
    row.locator("input[type=checkbox]").check()
    staff.locator("select[name=action]").select_option("hide_images")
    staff.get_by_role("button", name="Go").click()
    assert "The images are hidden." in staff.locator(".messagelist").inner_text()
    assert visitor.goto(share_url).status == 404
    owner.reload()
    assert "Hidden by staff" in owner.locator("main").inner_text()
    assert owner.get_by_role("button", name="Make public").count() == 0
    staff.goto("/admin/generation/staffaction/")
    assert "hide image" in staff.locator("#result_list").inner_text()


def test_10_staff_trace_a_jpeg_copy_of_an_image_to_its_job_and_owner(new_page, studio):
    import io

    from PIL import Image

    owner = new_page()
    owner_name = sign_up(owner)
    job = generate(owner, prompt="a traced windmill", steps=2, images=1)
    png = owner.request.get(owner.locator("#images img").first.get_attribute("src").replace(".webp", ".png")).body()
    copy = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(copy, format="JPEG", quality=90)  # 4:2:0, Pillow's default

    staff = staff_page(new_page, studio, "tracer10")
    staff.goto("/admin/generation/promptaudit/")
    staff.get_by_role("link", name="Trace an image").click()
    staff.wait_for_url("**/trace/")
    staff.get_by_label("Image").set_input_files({"name": "found.jpg", "mimeType": "image/jpeg",
                                                 "buffer": copy.getvalue()})
    staff.get_by_role("button", name="Trace").click()
    result = staff.locator("#trace-result").inner_text()
    assert "Watermark read (scheme luma tile" in result and job in result and owner_name in result
    assert "coded cells agree" in result
    assert "a traced windmill" in staff.locator(".trace-prompt").inner_text()
    screenshot(staff, "10-trace")


def test_11_staff_read_the_days_figures_on_the_dashboard(new_page, studio):
    page = new_page()
    sign_up(page)
    generate(page, prompt="a counted lighthouse", steps=2, images=2)
    staff = staff_page(new_page, studio, "watcher11")
    staff.goto("/")
    staff.get_by_role("link", name="Dashboard").click()
    staff.wait_for_url("**/staff/dashboard/")
    day = staff.locator("#window-24h")
    assert int(day.locator(".images").inner_text()) >= 2 and int(day.locator(".succeeded").inner_text()) >= 1
    assert "credits" in day.locator(".cost").inner_text() and "s of worker time" in day.locator(".cost").inner_text()
    assert "GPU s" not in staff.locator("main").inner_text()  # the worker may be a CPU
    assert day.locator("svg.chart g.bar").count() == 24 and staff.locator("#window-168h svg.chart g.bar").count() == 7
    tallest = max(float(h) for h in day.locator("svg.chart rect[fill='#4a6fa5']").evaluate_all(
        "rects => rects.map(r => r.getAttribute('height'))"))
    assert tallest == 120  # the busiest hour fills the chart
    screenshot(staff, "11-dashboard")


def test_12_an_operator_adds_an_sdxl_file_and_a_user_picks_it_with_its_refiner(new_page, studio, tiny_families):
    import shutil

    for family, name in (("sdxl", "pony-xl"), ("sdxl-refiner", "xl-refiner")):
        copied = studio.var_dir / "models" / f"{name}.safetensors"  # as an operator copies in a download
        shutil.copy(tiny_families[family]["file"], copied)
        # The tiny files need their tiny configs; a real file uses the one shipped for its family.
        studio.manage(f"from django.core.management import call_command; call_command('add_model', '{name}', "
                      f"'{copied}', '--config', '{tiny_families[family]['config']}')")
    page = new_page()
    sign_up(page)
    page.goto("/generate/")
    assert not page.locator("#id_refiner").is_visible()  # the default test model is SD 1.x
    page.get_by_label("Checkpoint").select_option(label="pony-xl")
    assert (page.get_by_label("Width").input_value(), page.get_by_label("Height").input_value()) == ("1024", "1024")
    sizes = page.locator("#size-preset option:not([hidden])").evaluate_all("options => options.map(o => o.value)")
    assert "1216x832" in sizes and "512x512" not in sizes and page.get_by_label("Size", exact=True).input_value() == "1024x1024"
    page.get_by_label("Refiner", exact=True).select_option(label="xl-refiner")
    page.get_by_label("Width").fill("256")
    page.get_by_label("Height").fill("256")
    page.get_by_label("Prompt", exact=True).fill("a lighthouse, (sdxl:1.1)")
    page.get_by_label("Steps").fill("3")
    page.get_by_label("Images").fill("1")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_url("**/generate/?job=*")
    page.wait_for_function("document.querySelectorAll('#images img').length == 1")
    assert "pony-xl · refiner xl-refiner from 0.8" in page.locator("#job .params").inner_text()
    screenshot(page, "12-sdxl-refiner")


def test_12b_a_user_picks_a_flux_checkpoint_and_the_form_becomes_fluxs(new_page, studio, tiny_flux):
    """FLUX.1 [dev] as ComfyUI users have it: the transformer file, its text encoders and VAE beside it."""
    import shutil

    files, models = tiny_flux["flux-dev"], studio.var_dir / "models"
    shutil.copy(files["transformer"], models / "flux-dev.safetensors")
    shutil.copytree(files["text_encoders"], models / "text_encoders", dirs_exist_ok=True)
    shutil.copy(files["vae"], models / "ae.safetensors")
    studio.manage(f"from django.core.management import call_command; call_command('add_model', 'flux-dev', "
                  f"'{models / 'flux-dev.safetensors'}', '--config', '{files['config']}')")
    page = new_page()
    sign_up(page)
    for phone in (False, True):
        page.set_viewport_size(PHONE if phone else {"width": 1280, "height": 900})
        page.goto("/generate/")
        if phone:  # the studio keeps the last job's settings: FLUX's form from the start
            assert page.get_by_label("Checkpoint").input_value() == page.evaluate(
                "[...document.getElementById('id_checkpoint').options].find(o => o.text === 'flux-dev').value")
        else:
            assert page.get_by_label("Negative prompt").is_visible()
            assert not page.get_by_label("Distilled guidance").is_visible()
            page.get_by_label("Checkpoint").select_option(label="flux-dev")
            assert page.get_by_label("Steps").input_value() == "28"
        assert not page.get_by_label("Negative prompt").is_visible() and not page.get_by_label("Guidance scale").is_visible()
        assert page.get_by_label("Distilled guidance").input_value() == "3.5"
        offered = page.locator("#id_scheduler option:not([hidden])").evaluate_all("options => options.map(o => o.value)")
        assert offered == ["Euler", "Euler a"] and page.locator("#hires").is_visible()
        page.get_by_label("Width").fill("256")
        page.get_by_label("Height").fill("256")
        page.get_by_label("Steps").fill("3")
        page.get_by_label("Images").fill("1")
        page.get_by_label("Prompt", exact=True).fill("a red house")
        page.get_by_role("button", name="Generate").click()
        page.wait_for_url("**/generate/?job=*")
        page.wait_for_function("document.querySelectorAll('#images img').length == 1")
        params = page.locator("#job .params").inner_text()
        assert "flux-dev" in params and "· guidance 3.5 ·" in params and "CFG" not in params
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        if not phone:  # (screenshot takes the phone view too)
            screenshot(page, "12b-flux")


def test_12c_a_user_picks_an_sd35_checkpoint_and_the_form_becomes_its(new_page, studio, tiny_sd3):
    """SD 3.5 Large as Stability ships it (the MMDiT and its VAE in one file), its text encoders in
    the text-encoder folder, chosen in the admin beside FLUX's tiny ones (which have other widths)."""
    from tests.support import install_sd35

    studio.manage(install_sd35(studio.var_dir / "models", tiny_sd3["sd35-large"], "sd3.5_large",
                               "sd3.5_large.safetensors"))
    page = new_page()
    sign_up(page)
    for phone in (False, True):
        page.set_viewport_size(PHONE if phone else {"width": 1280, "height": 900})
        page.goto("/generate/")
        if not phone:
            page.get_by_label("Checkpoint").select_option(label="sd3.5_large")
            assert page.get_by_label("Steps").input_value() == "28"
            assert page.get_by_label("Guidance scale").input_value() == "3.5"
        assert page.get_by_label("Negative prompt").is_visible() and page.get_by_label("Guidance scale").is_visible()
        assert not page.get_by_label("Distilled guidance").is_visible() and not page.get_by_label("Clip skip").is_visible()
        offered = page.locator("#id_scheduler option:not([hidden])").evaluate_all("options => options.map(o => o.value)")
        assert offered == ["Euler", "Euler a"]
        page.get_by_label("Width").fill("256")
        page.get_by_label("Height").fill("256")
        page.get_by_label("Steps").fill("2")
        page.get_by_label("Images").fill("1")
        page.get_by_label("Prompt", exact=True).fill("a red house")
        page.get_by_label("Negative prompt").fill("fog")
        page.get_by_role("button", name="Generate").click()
        page.wait_for_url("**/generate/?job=*")
        page.wait_for_function("document.querySelectorAll('#images img').length == 1")
        params = page.locator("#job .params").inner_text()
        assert "sd3.5_large" in params and "· CFG 3.5" in params and "guidance" not in params
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        if not phone:
            screenshot(page, "12c-sd35")


def test_12d_a_student_in_a_role_sees_its_checkpoints_and_is_told_its_limits(new_page, studio):
    """A role "trainees" (only the test model, 256 px): the student's page offers only it, and a
    larger size is refused on the page naming the role, charging nothing."""
    page = new_page()
    name = sign_up(page)
    studio.manage("from django.contrib.auth.models import Group, User; from generation.accounts.models import Role; "
                  "from generation.library.models import Checkpoint; "
                  "role = Role.objects.create(group=Group.objects.create(name='trainees'), max_side=256); "
                  "role.checkpoints.add(Checkpoint.objects.get(name='sdweb-test-tiny')); "
                  f"User.objects.get(username='{name}').groups.add(role.group)")
    for phone in (False, True):
        page.set_viewport_size(PHONE if phone else {"width": 1280, "height": 900})
        page.goto("/generate/")
        offered = page.locator("#id_checkpoint option").evaluate_all("options => options.map(o => o.text)")
        assert offered == ["sdweb-test-tiny"]
        before = balance(page)
        page.get_by_label("Prompt", exact=True).fill("a red house")
        page.get_by_label("Width").fill("512")
        page.get_by_label("Height").fill("512")
        page.get_by_role("button", name="Generate").click()
        error = page.get_by_role("alert").filter(has_text="at most 256 for your role (trainees)")
        assert error.first.is_visible() and balance(page) == before
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        if not phone:
            screenshot(page, "12d-role-limit")


def test_12e_an_admin_makes_a_role_and_a_team_and_a_student_signs_in_with_the_school(new_page, studio, tiny_families):
    """Issue 31's journey: the admin makes the role "students" (the test model only, 4 jobs at once,
    512 px, 50 credits a month) and the team "Physics 101" in the admin; a student signs in through
    the school's OpenID Connect provider, lands in the team, can't pick the SDXL checkpoint, spends
    the team's credits, and is told the size cap and a full storage quota plainly."""
    import shutil

    copied = studio.var_dir / "models" / "bigXL.safetensors"
    shutil.copy(tiny_families["sdxl"]["file"], copied)
    studio.manage(f"from django.core.management import call_command; call_command('add_model', 'bigXL', '{copied}', "
                  f"'--config', '{tiny_families['sdxl']['config']}')")
    admin = staff_page(new_page, studio, "principal")
    admin.goto("/admin/generation/role/add/")
    admin.get_by_label("Name:").fill("students")
    admin.locator("#id_checkpoints_from").select_option(label="sdweb-test-tiny")
    admin.locator("#id_checkpoints_add").click()
    admin.get_by_label("Active jobs:").fill("4")
    admin.get_by_label("Max side:").fill("512")
    admin.get_by_label("Monthly credits:").fill("50")
    admin.get_by_role("button", name="Save", exact=True).click()
    assert "was added successfully" in admin.locator(".messagelist").inner_text()
    admin.goto("/admin/generation/team/add/")
    admin.get_by_label("Name:").fill("Physics 101")
    admin.get_by_label("From sign in").check()
    admin.get_by_label("Grant:").fill("100")
    admin.get_by_label("Reason:").fill("the term's credits")
    admin.get_by_role("button", name="Save", exact=True).click()
    assert "was added successfully" in admin.locator(".messagelist").inner_text()
    admin.goto("/admin/generation/staffaction/")
    assert "grant team credits" in admin.locator("#result_list").inner_text()

    page = new_page()
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign in with Example School").click()
    page.get_by_label("Username").fill("student1")  # the school's own sign-in page
    page.get_by_label("Password").fill("student-pass-1")
    page.get_by_role("button", name="Sign in to Example School").click()
    page.wait_for_url("**/generate/")
    offered = page.locator("#id_checkpoint option").evaluate_all("options => options.map(o => o.text)")
    assert offered == ["sdweb-test-tiny"]  # no bigXL
    assert page.get_by_label("Credits").locator("option:checked").inner_text() == "Team Physics 101: its credits and gallery"
    page.get_by_label("Prompt", exact=True).fill("a pendulum")  # the cost line quotes against the team's pool
    assert page.locator("#team-pool").inner_text() == "the team's pool 100" and not page.locator("#own-pool").is_visible()
    own = balance(page)
    generate(page, prompt="a pendulum", steps=2, images=1)
    page.goto("/teams/physics-101/")
    pool = int(page.locator(".balance-team").inner_text())
    assert pool < 100 and balance(page) == own and "student1" in page.locator(".ledger").inner_text()
    page.get_by_role("link", name="The team's images").click()
    page.wait_for_url("**/teams/physics-101/gallery/")
    assert page.locator(".thumbs img, .grid img, main img").count() >= 1
    screenshot(page, "12e-team-gallery")
    for phone in (False, True):
        page.set_viewport_size(PHONE if phone else {"width": 1280, "height": 900})
        page.goto("/generate/")
        page.get_by_label("Prompt", exact=True).fill("a big pendulum")
        page.get_by_label("Width").fill("768")
        page.get_by_label("Height").fill("768")
        page.get_by_role("button", name="Generate").click()
        page.get_by_role("alert").filter(has_text="at most 512 for your role (students)").first.wait_for()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    studio.manage("from generation.accounts.models import Role; from gallery.models import Image; "
                  "Role.objects.filter(group__name='students').update(storage_mb=1, own_addons=True); "
                  "Image.objects.filter(owner__username='student1').update(team=None, stored_bytes=2 * 2**20); print(1)")
    page.goto("/generate/")
    page.get_by_label("Prompt", exact=True).fill("one more pendulum")
    page.get_by_label("Steps").fill("2")
    page.get_by_role("button", name="Generate").click()
    full = page.get_by_role("alert").filter(has_text="Your storage is full: 2.0 MB of your 1 MB")
    assert full.first.is_visible() and "Delete some images or add-ons to make room" in full.first.inner_text()
    screenshot(page, "12e-storage-full")


def test_13_upload_img2img_paint_a_mask_inpaint_outpaint_and_hires_fix(new_page):
    from PIL import Image as PILImage

    page = new_page()
    page.add_init_script(WATCH_LIVE_VIEW)
    sign_up(page)
    start = io.BytesIO()
    PILImage.radial_gradient("L").resize((256, 256)).convert("RGB").save(start, "PNG")

    def submit_and_wait(prompt):
        page.get_by_label("Prompt", exact=True).fill(prompt)
        page.get_by_label("Steps").fill("8")
        page.get_by_label("Images").fill("1")
        page.get_by_role("button", name="Generate").click()
        page.wait_for_url("**/generate/?job=*")
        page.wait_for_function("document.querySelectorAll('#images img').length == 1")
        assert any(kind == "preview" for kind, _ in page.evaluate("window.__live")), "previews were shown"
        return page.locator("#job .params").inner_text()

    # 1. img2img from an upload: the form takes the image's size and quotes strength x steps.
    page.goto("/generate/")
    page.get_by_label("Starting image").set_input_files(
        files=[{"name": "start.png", "mimeType": "image/png", "buffer": start.getvalue()}])
    page.locator("#paint").wait_for(state="visible")
    assert (page.get_by_label("Width").input_value(), page.get_by_label("Height").input_value()) == ("256", "256")
    assert "img2img, denoising 0.75" in submit_and_wait("a sunrise over hills")

    # 2. Inpaint: "Use as starting image" on the result, then paint a stroke over it.
    page.get_by_role("link", name="Use as starting image").first.click()
    page.wait_for_url("**/generate/?init=*")
    page.wait_for_function("document.getElementById('mask-canvas').width == 256")
    page.locator("#mask-canvas").scroll_into_view_if_needed()
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    painted_alpha = "document.getElementById('mask-canvas').getContext('2d').getImageData(128, 128, 1, 1).data[3]"
    assert page.evaluate(painted_alpha) == 255
    page.get_by_role("button", name="Undo").click()  # undo, then paint it again
    assert page.evaluate(painted_alpha) == 0
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    page.get_by_label("Masked content").select_option("latent noise")
    page.evaluate("window.__live = []")
    assert "inpaint, denoising 0.75" in submit_and_wait("a red door")
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    assert "inpaint, denoising strength 0.75, mask blur 4, masked content: latent noise" in page.locator(
        ".params-list").inner_text()
    screenshot(page, "13-inpainted-image")

    # 3. Outpaint: extend the picture 64 px to the right and inpaint the new strip.
    page.get_by_role("link", name="Use as starting image").click()
    page.wait_for_function("document.getElementById('mask-canvas').width == 256")
    page.locator("#out-right").fill("64")
    page.get_by_role("button", name="Extend canvas").click()
    page.wait_for_function("document.getElementById('mask-canvas').width == 320")
    assert page.get_by_label("Width").input_value() == "320" and page.get_by_label("Masked content").input_value() == "0"
    screenshot(page, "13-outpaint-form")
    page.evaluate("window.__live = []")
    submit_and_wait("a wide valley")
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    assert "320×256" in page.locator(".params-list").inner_text()

    # 4. Hires fix from text: one job, one charge, a larger image.
    page.goto("/generate/")
    page.get_by_label("Hires fix").check()
    page.get_by_label("Upscale by").fill("1.5")
    page.locator("#hires").get_by_label("Denoising strength").fill("0.55")  # its own field, in sight
    page.get_by_label("Size", exact=True).select_option("256x256")
    page.evaluate("window.__live = []")
    assert "hires fix ×1.5 (Latent)" in submit_and_wait("a castle at noon")
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    params = page.locator(".params-list").inner_text()
    assert "384×384" in params and "×1.5, Latent, denoising strength 0.55" in params
    screenshot(page, "13-hires-image")

    # 5. Upscale the hires image: a job of its own, and the larger copy is linked beside the original.
    original = page.url
    page.get_by_label("Upscale").select_option("2")
    page.get_by_role("button", name="Upscale").click()
    page.wait_for_url("**/jobs/*/")
    page.wait_for_function("document.querySelectorAll('#images img').length == 1")
    page.goto(original)
    page.get_by_role("link", name="768×768").click()
    page.wait_for_url("**/images/*/")
    assert "Upscaled×2 (Lanczos) from image" in page.locator(".params-list").inner_text().replace("\n", "")


def test_14_a_lora_a_negative_embedding_and_a_canny_controlnet_from_a_gallery_image(new_page, studio):
    from generation.engine.metadata import parse_parameters

    studio.add_tiny_addons()
    page = new_page()
    sign_up(page)
    generate(page, prompt="a white square on black", steps=2, images=1)
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    page.get_by_role("link", name="Use as control image").click()
    page.wait_for_url("**/generate/?control=*")
    assert page.locator("#cn-gallery img").is_visible()

    page.get_by_label("Prompt", exact=True).fill("a lighthouse")
    page.get_by_label("LoRA", exact=True).select_option("tiny-style")
    assert "Trained on: tinystyle, noise" in page.locator("#lora-trigger").inner_text()
    page.get_by_label("LoRA weight").fill("0.7")
    page.get_by_role("button", name="Add LoRA").click()
    page.get_by_label("Embedding", exact=True).select_option("tinyneg")
    page.get_by_role("button", name="Add to negative prompt").click()
    assert page.get_by_label("Prompt", exact=True).input_value() == "a lighthouse, <lora:tiny-style:0.7>"
    assert page.get_by_label("Negative prompt").input_value() == "tinyneg"
    page.get_by_label("ControlNet model").select_option(label=page.locator("#id_cn_model option").nth(1).inner_text())
    assert page.get_by_label("Preprocessor").input_value() == "canny"
    page.get_by_role("button", name="Preview the map").click()
    page.wait_for_function("document.getElementById('cn-map').src.startsWith('data:image/png')")
    assert page.locator("#cn-map").is_visible()
    screenshot(page, "14-addons-form")

    page.get_by_label("Steps").fill("3")
    page.get_by_label("Images").fill("1")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_url("**/generate/?job=*")
    page.wait_for_function("document.querySelectorAll('#images img').length == 1")
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    shown = page.locator(".params-list").inner_text()
    assert "tiny-style" in shown and "tinyneg" in shown and "tiny-canny" in shown
    screenshot(page, "14-addons-image")
    png = page.request.get(page.locator("img.full").get_attribute("src")).body()
    from PIL import Image as PILImage

    info = parse_parameters(PILImage.open(io.BytesIO(png)).info["parameters"])
    assert info["prompt"] == "a lighthouse, <lora:tiny-style:0.7>" and info["negative_prompt"] == "tinyneg"
    assert info["Lora hashes"].startswith("tiny-style: ") and info["TI hashes"].startswith("tinyneg: ")
    assert info["ControlNet 0"].startswith("Module: canny, Model: tiny-canny [")


def drop_file(page, data: bytes, name: str, mime: str) -> None:
    """Drop a file on the page as a person drags one from their desktop."""
    import base64

    page.evaluate("""([data, name, mime]) => {
        const files = new DataTransfer();
        files.items.add(new File([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))], name, {type: mime}));
        document.querySelector("main").dispatchEvent(new DragEvent("drop", {dataTransfer: files, bubbles: true}));
    }""", [base64.b64encode(data).decode(), name, mime])


def test_15_the_studio_remembers_reads_dropped_images_browses_in_a_lightbox_and_goes_dark(new_page):
    page = new_page()
    sign_up(page)
    generate(page, prompt="a red lighthouse, (storm:1.2)", steps=3, images=2)
    seed = int(re.findall(r"Seed (\d+)", page.locator("#images").inner_text())[0])

    # Compare the batch side by side at full size and pick the one to keep.
    page.get_by_role("button", name="Compare side by side").click()
    compare = page.get_by_role("dialog", name="Compare the images")
    assert compare.locator("img").count() == 2 and compare.locator("img").first.get_attribute("src").endswith(".png")
    compare.get_by_role("checkbox").nth(1).uncheck()
    page.keyboard.press("Escape")
    assert compare.is_hidden() and not page.locator("#images input[name=keep]").nth(1).is_checked()

    # The last settings and prompts are remembered; seed tools; Ctrl+Enter generates.
    page.goto("/generate/")
    assert page.get_by_label("Steps").input_value() == "3" and page.get_by_label("Seed", exact=True).input_value() == "-1"
    page.get_by_label("Prompt", exact=True).fill("")
    page.get_by_label("Recent prompts").select_option("a red lighthouse, (storm:1.2)")
    assert page.get_by_label("Prompt", exact=True).input_value() == "a red lighthouse, (storm:1.2)"
    page.get_by_role("button", name="Reuse last seed").click()
    assert page.get_by_label("Seed", exact=True).input_value() == str(seed)
    page.get_by_role("button", name="Random seed").click()
    assert page.get_by_label("Seed", exact=True).input_value() == "-1"
    page.get_by_label("Seed", exact=True).fill("4242")
    page.get_by_label("Lock", exact=True).check()
    page.reload()
    assert page.get_by_label("Seed", exact=True).input_value() == "4242"  # locked: kept from job to job
    page.get_by_label("Lock", exact=True).uncheck()
    page.get_by_label("Seed", exact=True).fill("-1")
    page.get_by_label("Images").fill("1")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    page.wait_for_url("**/generate/?job=*")
    page.wait_for_function("document.querySelectorAll('#images img').length == 1")

    # PNG Info: an image dropped on the page fills the form with the parameters it carries.
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    assert page.get_by_role("button", name="Copy parameters").is_visible()
    png = page.request.get(page.locator("img.full").get_attribute("src")).body()
    page.goto("/generate/")
    page.get_by_label("Steps").fill("30")
    drop_file(page, png, "found.png", "image/png")
    page.get_by_role("button", name="Read its parameters (PNG Info)").click()
    page.wait_for_function("document.getElementById('id_steps').value === '3'")
    assert page.get_by_label("Prompt", exact=True).input_value() == "a red lighthouse, (storm:1.2)"
    assert page.locator("#drop-note").inner_text().startswith("Read prompt, negative prompt, steps, CFG scale, seed")
    page.get_by_text("The parameters it carries").click()
    assert page.locator("#drop-parameters").inner_text().startswith("a red lighthouse, (storm:1.2)\nSteps: 3")
    drop_file(page, b"notes", "notes.txt", "text/plain")  # not an image: nothing to choose
    assert page.locator("#drop-choice").is_hidden()
    drop_file(page, png, "found.png", "image/png")
    page.get_by_role("button", name="Start from it (img2img)").click()
    page.locator("#paint").wait_for(state="visible")  # the starting image, as if picked in its field

    # The gallery: justified rows and a lightbox browsed with the keyboard.
    page.goto("/gallery/")
    page.locator(".thumbs a").first.click()
    lightbox = page.get_by_role("dialog", name="Image")
    assert lightbox.is_visible() and "1 of 3" in lightbox.inner_text()
    first = lightbox.locator("img").get_attribute("src")
    page.keyboard.press("ArrowRight")
    assert "2 of 3" in lightbox.inner_text() and lightbox.locator("img").get_attribute("src") != first
    page.keyboard.press("Escape")
    assert lightbox.is_hidden()

    # The dark theme, remembered across pages.
    page.get_by_role("button", name="Dark theme").click()
    page.goto("/generate/")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(20, 22, 26)"
    screenshot(page, "15-studio-dark")


def test_16_every_page_has_no_serious_accessibility_problem_in_either_theme(new_page, studio):
    from tests.support import serious_accessibility_problems

    page = new_page()
    own_team(studio, sign_up(page), "a11y")
    # The checker finds what it should: an image without a text alternative is a critical problem.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img id=probe src=/static/favicon.svg>')")
    assert any(p.startswith("image-alt (critical)") for p in serious_accessibility_problems(page))
    job = generate(page, prompt="an accessible lighthouse", steps=2, images=2)
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    image_page = page.url
    page.get_by_role("button", name="Make public").click()
    share = page.locator("a[href*='/s/']").get_attribute("href")
    pages = ["/generate/", f"/generate/?job={job}", f"/jobs/{job}/", image_page.replace(studio.base, ""),
             image_page.replace(studio.base, "") + "delete/", "/gallery/", "/explore/", "/account/", "/addons/", share,
             "/no-such-page/", "/teams/", "/teams/a11y/", "/teams/a11y/gallery/", "/account/two-factor/"]
    problems = {}
    for theme in ("light", "dark"):
        page.goto("/generate/")
        page.evaluate(f"localStorage.setItem('theme', '{theme}')")
        for path in pages:
            page.goto(path)
            problems |= {f"{theme} {path}: {p}": True for p in serious_accessibility_problems(page)}
    visitor = new_page()
    for path in ("/", "/accounts/login/", "/accounts/signup/", "/explore/", "/verify/"):
        visitor.goto(path)
        assert "Test model" not in visitor.locator("body").inner_text()  # the operator's notice is not for visitors
        problems |= {f"visitor {path}: {p}": True for p in serious_accessibility_problems(visitor)}
    assert not problems, "\n".join(problems)


def own_team(studio, username: str, slug: str) -> None:
    """A team `slug` that `username` owns, with a join link, a waiting invitation and a pool."""
    studio.manage("from django.contrib.auth.models import User; from generation.accounts import teams; "
                  "from generation.accounts.models import Team, TeamMember; "
                  f"team = Team.objects.create(name='{slug}', slug='{slug}'); user = User.objects.get(username='{username}'); "
                  "TeamMember.objects.create(team=team, user=user, role='owner'); "
                  "teams.invite_link_renew(actor=user, team=team); "
                  "print(teams.invite_email(actor=user, team=team, email='someone@example.org', join_url=str).pk)")


def test_17_every_page_fits_a_phone_without_sideways_scrolling(new_page, studio):
    studio.add_tiny_addons()  # the add-ons page lists them in a table
    page = new_page(phone=True)
    own_team(studio, sign_up(page), "phones")
    job = generate(page, prompt="a lighthouse at dusk, masterpiece, best quality, <lora:tiny-style:0.8>, tinyneg",
                   steps=2, images=2)
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    image_page = page.url.replace(studio.base, "")
    wide = {}
    for path in ("/generate/", f"/generate/?job={job}", f"/jobs/{job}/", image_page, "/gallery/", "/explore/",
                 "/account/", "/addons/", "/jobs/", "/verify/", "/teams/", "/teams/phones/", "/teams/phones/gallery/",
                 "/account/two-factor/"):
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            wide[path] = width
    assert not wide, wide  # the add-ons page was 595 px wide before its table became cards
    assert page.locator("header.top").bounding_box()["height"] < 110  # two short lines, not four
    screenshot(page, "17-addons-on-a-phone")


def test_18_generate_stays_in_reach_says_what_is_on_and_pictures_show_at_their_size(new_page, studio):
    studio.add_tiny_addons()  # a ControlNet section makes the form long
    page = new_page()  # 1280x900
    sign_up(page)
    page.goto("/generate/")
    assert page.locator("#size-preset option", has_text="1024 × 1024").count() == 1
    button = page.get_by_role("button", name="Generate", exact=True)
    assert button.bounding_box()["y"] + button.bounding_box()["height"] <= 900  # in view without scrolling
    page.get_by_label("Hires fix").check()
    page.get_by_label("Upscale by").fill("1.5")
    assert page.locator("#extras").inner_text() == "· with hires fix ×1.5"  # said beside the button
    page.get_by_label("Hires fix").uncheck()
    assert page.locator("#extras").inner_text() == ""
    one = int(page.locator("#cost").inner_text())
    page.get_by_label("X type").select_option("CFG Scale")
    page.get_by_label("X values").fill("4, 7, 10")
    page.get_by_label("Batch count").fill("2")
    assert page.locator("#extras").inner_text() == "· with 2 jobs, an X/Y/Z plot of 3 cells"
    assert int(page.locator("#cost").inner_text()) == 6 * one
    page.get_by_label("X type").select_option("Nothing")
    page.get_by_label("Batch count").fill("1")

    generate(page, prompt="a lone lighthouse", steps=2, images=1)
    page.locator("#images a").first.click()
    page.wait_for_url("**/images/*/")
    page.get_by_role("button", name="Make public").click()
    assert "on Explore for everyone" in page.locator("main").inner_text()
    assert page.get_by_role("button", name="Copy link").is_visible()
    page.goto("/gallery/")
    thumb = page.locator(".thumbs img").first.bounding_box()
    assert thumb["width"] < 400  # one picture alone is not stretched across the page
    page.locator(".thumbs a").first.click()
    shown = page.locator(".lightbox img").bounding_box()
    assert shown["height"] > thumb["height"]  # the lightbox shows it larger than its thumbnail
    assert page.get_by_role("button", name="Close").bounding_box()["y"] > shown["y"]  # below it, not over the header
    page.keyboard.press("Escape")
