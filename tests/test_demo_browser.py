"""The demo in a real browser: the app of `emoreason demo` serves a tiny trained model on
127.0.0.1, and headless Chromium (Debian's `chromium`, driven through Playwright's
Python API with `executable_path`: Playwright's own browser download is not available)
uploads bundled clips, picks an example and records one through its fake microphone. The
screenshots are kept under runs/test-artifacts/ (or $EMOREASON_ARTIFACTS), and the path of
the one-clip page is printed."""

import os
import shutil
import socket
from pathlib import Path

import pytest
from conftest import ROOT

from reasoning.demo import (
    DEFAULT_HOST,
    EXAMPLE_CLIPS,
    SAMPLES_DIR,
    DemoModel,
    build_app,
    check_port,
    launch,
    quadrant,
)
from reasoning.evidence import measure_manifest
from reasoning.explain import Explainer
from reasoning.manifest import write_manifest

pytestmark = pytest.mark.slow  # a web server and a browser

ARTIFACTS = Path(os.environ.get("EMOREASON_ARTIFACTS", ROOT / "runs" / "test-artifacts"))


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium, or a skip that says how to install it (before any model is trained)."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed: `make sysdeps` installs Debian's chromium when run as root "
                    "(or: apt-get install chromium)")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(chromium, trained, tmp_path):
    """The demo app on a free port of 127.0.0.1, built and launched by the functions
    `emoreason demo` runs, with the training rows measured as the corpus baseline:
    (url, checkpoint, chromium)."""
    trainer, rows = trained
    measured, _ = measure_manifest(rows)
    baseline = write_manifest(measured, tmp_path / "measured.jsonl")
    port = free_port()
    check_port(DEFAULT_HOST, port)
    app = build_app(DemoModel(trainer.output_dir, baseline=baseline, device="cpu"))
    launch(app, DEFAULT_HOST, port, block=False)
    try:
        yield f"http://{DEFAULT_HOST}:{port}/", trainer.output_dir, chromium
    finally:
        app.close()


def test_the_page_explains_uploaded_clips_in_chromium(served, tmp_path):
    from playwright.sync_api import sync_playwright

    url, checkpoint, exe = served
    clip = SAMPLES_DIR / EXAMPLE_CLIPS[2]
    expected = Explainer(checkpoint, device="cpu").predict([{"id": clip.stem, "audio": str(clip)}],
                                                           progress=False)[0]
    bad = tmp_path / "notes.txt"
    bad.write_text("not a sound")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        # Chromium's fake microphone (a beep) stands in for a voice when the page records
        browser = p.chromium.launch(executable_path=exe, headless=True, args=[
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        try:
            page = browser.new_context(permissions=["microphone"], viewport={"width": 1280, "height": 1400}).new_page()
            page.set_default_timeout(60_000)
            page.goto(url, wait_until="domcontentloaded")
            # several clips, one of which is not audio: a table, and the bad one reported in it
            page.get_by_role("tab", name="Several clips").click()
            page.locator("#clips input[type=file]").set_input_files([str(clip), str(bad)])
            page.wait_for_function("document.querySelector('#clips').innerText.includes('notes')")  # uploaded
            page.click("#explain-all")
            page.wait_for_selector("#many-status :text('clips explained')")
            assert "1 of 2 clips explained; 1 could not be used." in page.inner_text("#many-status")
            table = page.inner_text("#table")
            assert "notes.txt: not usable as audio" in table and clip.name in table
            page.screenshot(path=str(ARTIFACTS / "demo_several_clips.png"), full_page=True)
            # the app goes on serving: one clip, uploaded
            page.get_by_role("tab", name="One clip").click()
            page.locator("#clip input[type=file]").set_input_files(str(clip))
            page.locator("#clip").get_by_test_id("audio-player-Clip").wait_for(state="attached")  # uploaded
            page.click("#explain")
            page.wait_for_selector("#status :text('Baseline')")
            status = page.inner_text("#status")
            assert f"{clip.name} ({expected['duration']:.2f} s): {expected['emotion']}" in status
            probs = page.inner_text("#probabilities")
            for label, prob in expected["probabilities"].items():
                assert label in probs and f"{round(prob * 100)}%" in probs, (label, prob, probs)
            rationale = page.inner_text("#rationale")
            assert f"written by the model): {expected['rationale']}" in rationale and "Verifier:" in rationale
            assert quadrant(expected["valence"], expected["arousal"]) in page.inner_text("#va")
            evidence = page.inner_text("#evidence")
            assert "mean pitch (f0_mean_st)" in evidence and " ± " in evidence
            shot = ARTIFACTS / "demo_one_clip.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}\npage status: {status}\nprobabilities: {expected['probabilities']}")
            # a bundled example, then a clip recorded in the page
            page.get_by_text(EXAMPLE_CLIPS[1]).click()
            page.click("#explain")
            page.wait_for_selector(f"#status :text('{EXAMPLE_CLIPS[1]}')")
            clip_box = page.locator("#clip")
            clip_box.get_by_label("Clear").click()
            clip_box.get_by_label("Record audio").click()
            clip_box.locator("button:visible", has_text="Record").click()
            page.wait_for_timeout(1500)
            clip_box.locator("button:visible", has_text="Stop").click()
            clip_box.get_by_test_id("audio-player-Clip").wait_for(state="attached")
            page.click("#explain")
            page.wait_for_selector("#status :text('audio.wav')")  # Gradio names a recording audio.wav
            assert "Baseline" in page.inner_text("#status") and "%" in page.inner_text("#probabilities")
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
