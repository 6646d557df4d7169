"""The head view in a real browser: headless Chromium driven by selenium opens the file, picks a
layer and a head, hovers a token and reads back what is highlighted.

Needs Debian's chromium and chromium-driver (.ci/run installs them); without them the tests
fail, they are never skipped.
"""

import shutil
from pathlib import Path

import pytest
import torch
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from attnlab.models import GPT, EncoderDecoder
from attnlab.models.config import GPTConfig, Seq2SeqConfig
from attnlab.viz.capture import capture_attention
from attnlab.viz.headview import head_view_data, write_head_view


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("headless Chromium is needed for the head-view test: "
                    "apt-get install -y chromium chromium-driver (.ci/run does it)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1000,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path),
                              options=options)
    yield driver
    driver.quit()


def _gpt_view(tmp_path, T=16, per_query=3):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, d_model=32, n_heads=4, n_layers=2, max_len=64)).eval()
    idx = torch.randint(0, 40, (1, T))
    with torch.no_grad(), capture_attention(model) as cap:
        model(idx)
    tokens = [f"t{i}" for i in range(T)]
    out = write_head_view(cap.records, tmp_path / "view.html", tokens=tokens,
                          per_query=per_query, title="test view")
    return out, cap.records, tokens


def _highlighted(driver, css):
    return sorted(int(e.get_attribute("data-i")) for e in driver.find_elements(By.CSS_SELECTOR,
                                                                                css))


def test_select_layer_and_head_then_hover_a_token(browser, tmp_path):
    out, records, _ = _gpt_view(tmp_path)
    html = out.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        '"http://www.w3.org/2000/svg"', "") and "https://" not in html  # no network
    browser.get(out.resolve().as_uri())
    Select(browser.find_element(By.ID, "layer")).select_by_value("1")
    for h in (0, 1, 3):  # keep head 2 only
        browser.find_element(By.ID, f"head-{h}").click()
    links = browser.find_elements(By.CSS_SELECTOR, "#view line.link")
    assert links and {e.get_attribute("data-h") for e in links} == {"2"}
    query = 9
    token = browser.find_element(By.CSS_SELECTOR, f'#view .tok.left[data-i="{query}"]')
    ActionChains(browser).move_to_element(token).perform()
    # what the page highlights == the 3 strongest keys of that query in the captured weights
    expected = sorted(records[1].weights[0, 2, query].topk(3).indices.tolist())
    assert _highlighted(browser, "#view .tok.right.hl") == expected
    assert _highlighted(browser, "#view .tok.left.active") == [query]
    on = browser.find_elements(By.CSS_SELECTOR, "#view line.link.on")
    assert len(on) == 3 and all(e.is_displayed() for e in on)
    hidden = [e for e in browser.find_elements(By.CSS_SELECTOR, "#view line.link")
              if "on" not in e.get_attribute("class")]
    assert hidden and not any(e.is_displayed() for e in hidden[:20])
    assert "stack.blocks.1.self_attn" in browser.find_element(By.ID, "status").text
    shot = tmp_path / "headview.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"
    # moving away restores every link
    ActionChains(browser).move_to_element(browser.find_element(By.TAG_NAME, "h1")).perform()
    assert not browser.find_elements(By.CSS_SELECTOR, "#view .tok.hl")


def test_hover_a_key_token_highlights_its_queries(browser, tmp_path):
    out, records, _ = _gpt_view(tmp_path, per_query=16)  # every link drawn
    browser.get(out.resolve().as_uri())
    for h in (1, 2, 3):
        browser.find_element(By.ID, f"head-{h}").click()
    key = 4
    ActionChains(browser).move_to_element(browser.find_element(
        By.CSS_SELECTOR, f'#view .tok.right[data-i="{key}"]')).perform()
    expected = (records[0].weights[0, 0, :, key] > 0).nonzero().flatten().tolist()
    assert _highlighted(browser, "#view .tok.left.hl") == expected  # causal: queries >= 4
    assert expected == list(range(key, 16))


def test_cross_attention_layer_shows_decoder_against_encoder_tokens(browser, tmp_path):
    torch.manual_seed(0)
    model = EncoderDecoder(Seq2SeqConfig(vocab_size=30, d_model=16, n_heads=2, n_layers=1,
                                         max_len=32)).eval()
    src, tgt = torch.randint(0, 30, (1, 7)), torch.randint(0, 30, (1, 4))
    with torch.no_grad(), capture_attention(model) as cap:
        model(src, tgt)
    names = [r.name for r in cap.records]
    cross = next(i for i, r in enumerate(cap.records) if r.kind == "cross")
    out = write_head_view(cap.records, tmp_path / "s2s.html", tokens=[f"s{i}" for i in range(7)],
                          target=[f"d{i}" for i in range(4)])
    browser.get(out.resolve().as_uri())
    Select(browser.find_element(By.ID, "layer")).select_by_value(str(cross))
    left = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#view .tok.left")]
    right = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#view .tok.right")]
    assert left == [f"d{i}" for i in range(4)] and right == [f"s{i}" for i in range(7)], names
    ActionChains(browser).move_to_element(browser.find_element(
        By.CSS_SELECTOR, '#view .tok.left[data-i="2"]')).perform()
    expected = sorted(cap.records[cross].weights[0, :, 2].topk(7, dim=-1).indices.flatten()
                      .unique().tolist())
    assert _highlighted(browser, "#view .tok.right.hl") == expected


def test_long_input_draws_only_the_strongest_links_and_says_so(browser, tmp_path):
    T = 1200
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, d_model=32, n_heads=2, n_layers=1, max_len=T)).eval()
    with torch.no_grad(), capture_attention(model) as cap:
        model(torch.randint(0, 50, (1, T)))
    out = write_head_view(cap.records, tmp_path / "long.html",
                          tokens=[f"w{i}" for i in range(T)], per_query=4, max_links=1500)
    data = head_view_data(cap.records, tokens=[f"w{i}" for i in range(T)], per_query=4,
                          max_links=1500)
    browser.get(out.resolve().as_uri())
    lines = browser.execute_script("return document.querySelectorAll('#view line').length")
    assert lines == sum(len(h["q"]) for h in data["layers"][0]["heads"]) == 2 * 1500
    status = browser.find_element(By.ID, "status").text
    total = sum(h["total"] for h in data["layers"][0]["heads"])
    assert f"showing 3000 of {total} links" in status and "strongest" in status
    assert total == 2 * T * (T + 1) // 2  # causal softmax: every allowed pair is nonzero
    token = browser.find_element(By.CSS_SELECTOR, '#view .tok.left[data-i="1100"]')
    browser.execute_script("arguments[0].scrollIntoView()", token)
    ActionChains(browser).move_to_element(token).perform()
    assert _highlighted(browser, "#view .tok.left.active") == [1100]
    assert len(_highlighted(browser, "#view .tok.right.hl")) <= 2 * 4


def test_page_is_self_contained(tmp_path):
    out, _, _ = _gpt_view(tmp_path)
    html = out.read_text()
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    assert Path(out).stat().st_size < 200_000
