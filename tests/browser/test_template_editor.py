"""The template editor in a real browser: the visual MJML builder (GrapesJS), the code editor
(CodeMirror), the preview (on open, phone width, dark), the pre-send checks, compile errors
with their line, and a form that still saves without JavaScript."""

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.core import mail
from playwright.sync_api import expect

from contacts_app.services import contact_upsert
from templates_app.lint import known_variables_forget
from templates_app.models import Template
from tests.browser.conftest import PASSWORD, login, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

TWO_COLUMNS = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column><mj-text>Left column for {{ firstName }}</mj-text></mj-column>
      <mj-column><mj-text>Right column</mj-text></mj-column>
    </mj-section>
    <mj-section>
      <mj-column>
        <mj-text>Write your message here.</mj-text>
        <mj-text><a href="{{ unsubscribeUrl }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""

# Line 4 opens an mj-column that line 6 does not close.
BROKEN = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Hello</mj-text>
      </mj-section>
  </mj-body>
</mjml>"""

OWN_DARK_STYLES = """<html><head><style>
  .card { background-color: #ffffff; color: #111111; }
  @media (prefers-color-scheme: dark) { .card { background-color: #222222 !important; } }
</style></head><body><div class="card">Hello {{ firstName }}</div>
<a href="{{ unsubscribeUrl }}">Unsubscribe</a></body></html>"""


def containing(text):
    return re.compile(re.escape(text))


def mjml_template(mjml=TWO_COLUMNS, **fields):
    return Template.objects.create(
        name=fields.pop("name", "Newsletter"),
        subject="News for {{ firstName }}",
        mjml=mjml,
        **fields,
    )


def open_template(page, template=None):
    page.goto(
        f"/admin/templates_app/template/{template.pk}/change/"
        if template
        else "/admin/templates_app/template/add/"
    )
    page.wait_for_selector('#template-preview[data-ready="true"]')


def preview(page):
    return page.frame_locator("#preview-frame")


def mjml_field(page):
    return page.locator('textarea[name="mjml"]')


def code_editor(page):
    return page.locator(".te-code .cm-content")


def replace_code(page, text):
    """Replaces the code editor's whole text, as a paste would (typing `>` would make
    CodeMirror close tags)."""
    code_editor(page).click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(text)


def drag_block(page, label, target):
    """Drags a block from GrapesJS's palette onto an element of the builder's canvas, with the
    mouse, as a person would: press, move off the block to start the drag, move over the
    target until GrapesJS shows where the block would land, release."""
    page.locator(".te-builder").evaluate("e => e.scrollIntoView({block: 'center'})")
    block = page.locator(".gjs-block", has_text=label).bounding_box()
    box = target.bounding_box()
    x, y = block["x"] + block["width"] / 2, block["y"] + block["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 10, y + 10, steps=4)
    page.mouse.move(box["x"] + 40, box["y"] + box["height"] - 3, steps=25)
    page.mouse.move(box["x"] + 50, box["y"] + box["height"] - 2, steps=5)
    expect(page.locator(".gjs-placeholder >> visible=true").first).to_be_visible()
    page.mouse.up()


def test_it_builds_by_dragging_a_block_and_saves_the_mjml(page, superuser, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    template = mjml_template()
    login(page, "boss")
    open_template(page, template)

    # The builder loads with the template's MJML, and the preview is filled on open.
    builder = page.frame_locator(".gjs-frame")
    expect(builder.get_by_text("Write your message here.")).to_be_visible()
    expect(preview(page).get_by_text("Left column for Ada")).to_be_visible()
    expect(page.locator("#preview-subject")).to_have_text("News for Ada")
    expect(page.locator("#preview-text")).to_contain_text("Left column for Ada")
    assert preview(page).get_by_text("Insert text here").count() == 0

    drag_block(page, "Text", builder.get_by_text("Write your message here."))
    expect(preview(page).get_by_text("Insert text here")).to_be_visible()
    expect(mjml_field(page)).to_have_value(containing("Insert text here"))
    screenshot(page, "template-editor-builder")

    # Undo takes the block out again; redo puts it back.
    page.click('.gjs-pn-btn[title="Undo"]')
    expect(preview(page).get_by_text("Insert text here")).to_have_count(0)
    page.click('.gjs-pn-btn[title="Redo"]')
    expect(preview(page).get_by_text("Insert text here")).to_be_visible()

    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist")
    template.refresh_from_db()
    assert "Insert text here" in template.mjml
    assert "<mj-" not in template.html and "Insert text here" in template.html

    # What is sent is the compiled, responsive HTML.
    open_template(page, template)
    page.click("#send-test")
    page.wait_for_selector(".messagelist .success")
    sent = dict((kind, body) for body, kind in mail.outbox[0].alternatives)["text/html"]
    assert "<mj-" not in sent and "@media" in sent and "Insert text here" in sent


def test_saving_right_after_typing_in_the_builder_keeps_the_typing(page, superuser):
    template = mjml_template()
    login(page, "boss")
    open_template(page, template)
    page.frame_locator(".gjs-frame").get_by_text("Right column").dblclick()
    page.keyboard.press("End")
    page.keyboard.type(" just typed")
    # At once: before the pause after which typing is written into the form on its own.
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist")
    template.refresh_from_db()
    assert "Right column just typed" in template.mjml


def test_phone_width_narrows_the_preview_and_stacks_columns(page, superuser):
    login(page, "boss")
    open_template(page, mjml_template())
    left = preview(page).get_by_text("Left column for Ada")
    right = preview(page).get_by_text("Right column")
    expect(left).to_be_visible()
    assert page.locator("#preview-frame").bounding_box()["width"] == pytest.approx(680, abs=2)
    side_by_side = left.bounding_box(), right.bounding_box()
    assert side_by_side[1]["x"] > side_by_side[0]["x"] + 100  # two columns on a desktop

    page.click('[data-preview-width="phone"]')
    assert page.locator("#preview-frame").bounding_box()["width"] == pytest.approx(375, abs=2)
    expect(page.locator('[data-preview-width="phone"]')).to_have_attribute("aria-pressed", "true")
    # MJML's media query stacks the columns below 480 px: the right one goes under the left.
    page.wait_for_function(
        "() => document.querySelector('#preview-frame').getBoundingClientRect().width < 400"
    )
    stacked_left, stacked_right = left.bounding_box(), right.bounding_box()
    assert stacked_right["y"] > stacked_left["y"] + stacked_left["height"] - 1
    assert abs(stacked_right["x"] - stacked_left["x"]) < 5
    screenshot(page, "template-editor-phone")


def test_dark_mode_inverts_an_email_without_dark_styles(page, superuser):
    login(page, "boss")
    open_template(page, mjml_template())
    html = preview(page).locator("html")
    expect(preview(page).get_by_text("Left column for Ada")).to_be_visible()
    assert html.evaluate("e => getComputedStyle(e).filter") == "none"
    page.click('[data-preview-theme="dark"]')
    expect(preview(page).locator('style[data-preview="dark"]')).to_have_count(1)
    assert "invert(1)" in html.evaluate("e => getComputedStyle(e).filter")
    screenshot(page, "template-editor-dark")
    page.click('[data-preview-theme="light"]')
    expect(preview(page).locator('style[data-preview="dark"]')).to_have_count(0)


def test_dark_mode_applies_the_emails_own_dark_styles(page, superuser):
    Template.objects.create(name="Dark", subject="Hi", html=OWN_DARK_STYLES)
    login(page, "boss")
    open_template(page, Template.objects.get(name="Dark"))
    card = preview(page).locator(".card")
    expect(card).to_have_text("Hello Ada")
    background = "e => getComputedStyle(e).backgroundColor"
    assert card.evaluate(background) == "rgb(255, 255, 255)"
    page.click('[data-preview-theme="dark"]')
    expect(preview(page).locator('style[data-preview="dark"]')).to_have_count(1)
    assert card.evaluate(background) == "rgb(34, 34, 34)"
    # Its own styles, not the inversion that emails without any get.
    assert preview(page).locator("html").evaluate("e => getComputedStyle(e).filter") == "none"


def test_switching_between_builder_and_code_keeps_the_content(page, superuser):
    login(page, "boss")
    open_template(page, mjml_template())
    builder = page.frame_locator(".gjs-frame")
    expect(builder.get_by_text("Write your message here.")).to_be_visible()

    page.click('.te-tabs [data-mode="code"]')
    expect(page.locator(".te-builder")).to_be_hidden()
    expect(code_editor(page)).to_contain_text("Write your message here.")
    # An edit in the code: the sentence gets longer.
    page.locator(".te-code .cm-line", has_text="Write your message here.").click()
    page.keyboard.press("End")
    for _ in range(len("</mj-text>")):
        page.keyboard.press("ArrowLeft")
    page.keyboard.type(" Spring sale!")
    expect(preview(page).get_by_text("Write your message here. Spring sale!")).to_be_visible()

    page.click('.te-tabs [data-mode="builder"]')
    expect(builder.get_by_text("Write your message here. Spring sale!")).to_be_visible()
    expect(builder.get_by_text("Left column for {{ firstName }}")).to_be_visible()

    page.click('.te-tabs [data-mode="code"]')
    expect(code_editor(page)).to_contain_text("Spring sale!")
    # Liquid is highlighted apart from the HTML around it.
    variable = page.locator(".te-code .cm-line span", has_text="firstName").first
    assert variable.evaluate("e => getComputedStyle(e).color") != code_editor(page).evaluate(
        "e => getComputedStyle(e).color"
    )
    value = mjml_field(page).input_value()
    assert (
        "Spring sale!" in value and "{{ firstName }}" in value and "{{ unsubscribeUrl }}" in value
    )
    screenshot(page, "template-editor-code")
    page.emulate_media(color_scheme="dark")  # the admin's "auto" theme follows the system
    expect(page.locator(".te-code .cm-editor")).to_have_css("background-color", "rgb(40, 44, 52)")
    screenshot(page, "template-editor-code-dark")


def test_a_compile_error_shows_its_line_live_and_on_save(page, superuser):
    template = mjml_template()
    login(page, "boss")
    open_template(page, template)
    expect(preview(page).get_by_text("Left column for Ada")).to_be_visible()
    page.click('.te-tabs [data-mode="code"]')
    replace_code(page, BROKEN)

    errors = page.locator("#te-errors")
    expect(errors).to_contain_text("line 4")
    expect(errors).to_contain_text("<mj-column> (line 4) is not closed")
    # The line is marked in the code editor, and the preview keeps the last good render.
    expect(page.locator(".te-code .cm-lint-marker-error")).to_have_count(1)
    expect(page.locator("#preview-stale")).to_be_visible()
    expect(preview(page).get_by_text("Left column for Ada")).to_be_visible()
    screenshot(page, "template-editor-compile-error")

    page.click("input[name=_continue]")
    expect(page.locator(".form-row.field-mjml .errorlist")).to_contain_text("line 4")
    template.refresh_from_db()
    assert template.mjml == TWO_COLUMNS  # refused: nothing saved


def test_pre_send_checks_update_while_typing(page, superuser):
    Template.objects.create(
        name="Plain", subject="Hi", html='<p>Hi</p><img src="https://example.com/a.png">'
    )
    login(page, "boss")
    open_template(page, Template.objects.get(name="Plain"))
    assert page.locator("#te-format").input_value() == "html"
    checks = page.locator("#preview-checks")
    expect(checks.locator('[data-code="image_alt"]')).to_be_visible()
    expect(checks.locator('[data-code="unsubscribe"]')).to_be_visible()

    replace_code(
        page,
        '<p>Hi</p><img src="https://example.com/a.png" alt="Our logo">'
        '<a href="{{ unsubscribeUrl }}">Unsubscribe</a>',
    )
    expect(checks.locator('[data-code="image_alt"]')).to_have_count(0)
    expect(checks.locator('[data-code="unsubscribe"]')).to_have_count(0)

    # A transactional template needs no unsubscribe link: the type counts too.
    replace_code(page, "<p>Hi</p>")
    expect(checks.locator('[data-code="unsubscribe"]')).to_be_visible()
    page.select_option("#id_type", "transactional")
    expect(checks.locator('[data-code="unsubscribe"]')).to_have_count(0)


def test_variables_are_inserted_from_the_list(page, superuser):
    contact_upsert(email="ann@example.com", data={"company": "Acme", "plan": "pro"})
    known_variables_forget()
    login(page, "boss")
    open_template(page, mjml_template())
    options = page.locator("#te-variable option")
    expect(options.filter(has_text="company")).to_have_count(1)
    values = set(options.evaluate_all("os => os.map(o => o.value)"))
    assert {"company", "plan", "unsubscribeUrl", "manageUrl", "email"} <= values

    # In the builder: double-click a text, pick the variable in GrapesJS's text toolbar.
    builder = page.frame_locator(".gjs-frame")
    builder.get_by_text("Right column").dblclick()
    page.keyboard.press("End")
    # Typing in the builder reaches the preview while the text is still being edited.
    page.keyboard.type(" for you")
    expect(preview(page).get_by_text("Right column for you")).to_be_visible()
    page.keyboard.type("!")
    expect(preview(page).get_by_text("Right column for you!")).to_be_visible()
    page.locator(".te-rte-variables").select_option("company")
    builder.get_by_text("Write your message here.").click()  # ends the text edit
    expect(mjml_field(page)).to_have_value(containing("Right column for you!{{ company }}"))
    # Sample data has no company: the variable renders empty in the preview.
    expect(preview(page).get_by_text("Right column for you!", exact=True)).to_be_visible()

    # In the code: at the cursor.
    page.click('.te-tabs [data-mode="code"]')
    page.locator(".te-code .cm-line", has_text="Write your message here.").click()
    page.keyboard.press("End")
    page.locator("#te-variable").select_option("plan")
    expect(mjml_field(page)).to_have_value(containing("</mj-text>{{ plan }}"))


def test_rendering_for_a_contact_needs_the_contact_permission(page, transactional_db):
    contact_upsert(email="ann@example.com", data={"firstName": "Ann", "company": "Acme"})
    known_variables_forget()
    user = User.objects.create_user("writer", "writer@example.com", PASSWORD, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="templates_app", codename__endswith="_template"
        )
    )
    login(page, "writer")
    open_template(page, mjml_template())
    expect(preview(page).get_by_text("Left column for Ada")).to_be_visible()
    # Contact data keys are contact data: the list offers the sample data's keys.
    values = set(page.locator("#te-variable option").evaluate_all("os => os.map(o => o.value)"))
    assert "company" not in values and "firstName" in values
    page.fill("#preview-contact", "ann@example.com")
    expect(page.locator("#preview-errors")).to_contain_text("permission to view contacts")
    assert preview(page).get_by_text("Left column for Ann").count() == 0


def test_a_user_who_may_only_view_gets_the_saved_template_previewed(page, transactional_db):
    template = mjml_template()
    user = User.objects.create_user("reader", "reader@example.com", PASSWORD, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_template"))
    login(page, "reader")
    open_template(page, template)
    expect(preview(page).get_by_text("Left column for Ada")).to_be_visible()
    expect(page.locator("#template-editor")).to_be_hidden()


def test_the_form_saves_without_javascript(browser, live_server, superuser):
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    try:
        login(page, "boss")
        page.goto("/admin/templates_app/template/add/")
        page.fill("#id_name", "No script")
        page.fill("#id_subject", "Hello")
        page.fill("#id_mjml", TWO_COLUMNS)
        page.click("input[name=_save]")
        page.wait_for_selector(".messagelist")
    finally:
        context.close()
    template = Template.objects.get(name="No script")
    assert template.mjml.replace("\r\n", "\n") == TWO_COLUMNS  # a form posts CRLF
    assert "<mj-" not in template.html and "Right column" in template.html
