"""`make docs`: build the site with tools/docs.py, serve it on localhost and open it in headless Chromium.

Skips when no Chromium is installed (Debian: `apt-get install chromium`)."""
import base64, functools, http.server, io, json, os, re, shutil, subprocess, sys, threading, urllib.request
from html.parser import HTMLParser
from pathlib import Path
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/"nbs"


def _find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if p := shutil.which(name): return p
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = _find_chromium()
if CHROMIUM is None: pytest.skip("no Chromium binary found (Debian: apt-get install chromium)", allow_module_level=True)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _page_name(nb):
    "nbdev's page name for a notebook (as in `_modidx.py`): 02_models.unet.ipynb -> models.unet.html"
    from nbdev.config import nbpath2html
    return nbpath2html(Path(nb.name)).name


def _module_nbs(): return sorted(p for p in NBS.glob("*.ipynb") if p.name != "index.ipynb")


class _Page(HTMLParser):
    "The bits of a page the checks need: title, links (and those in #module-list), images, <pre> texts in outputs"
    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.title, self.links, self.module_links, self.imgs, self.out_pres, self.text = "", [], [], [], [], []
        self._stack, self._in_title, self._pre = [], False, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("img", "br", "hr", "meta", "link", "input", "source", "wbr", "col", "area", "base", "embed"):
            if tag == "img": self.imgs.append(a.get("src") or "")
            return
        self._stack.append((tag, a.get("id", ""), a.get("class", "") or ""))
        if tag == "title": self._in_title = True
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
            if any(i == "module-list" for _, i, _ in self._stack): self.module_links.append(a["href"])
        if tag == "pre" and any("jp-OutputArea-output" in c for _, _, c in self._stack): self._pre = []

    def handle_endtag(self, tag):
        if tag == "title": self._in_title = False
        if tag == "pre" and self._pre is not None: self.out_pres.append("".join(self._pre)); self._pre = None
        for i in range(len(self._stack) - 1, -1, -1):   # pop to the matching open tag (tolerates unclosed tags)
            if self._stack[i][0] == tag: del self._stack[i:]; break

    def handle_data(self, data):
        if self._in_title: self.title += data
        if self._pre is not None: self._pre.append(data)
        self.text.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "Build the docs (reusing nbdev's `_proc/` cache) into a temporary folder"
    out = tmp_path_factory.mktemp("site")/"_docs"
    r = subprocess.run([sys.executable, "tools/docs.py", "--no-quarto", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"tools/docs.py failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert r.stdout.strip().splitlines()[-1] == str(out/"index.html")
    return out


@pytest.fixture(scope="module")
def server(site):
    "Serve the site on 127.0.0.1, on a free port"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown(); httpd.server_close()


def _chromium(tmp_path, *args):
    r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path/'chromium-profile'}", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"chromium failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def dom(server, tmp_path_factory):
    "The DOM of a page as headless Chromium renders it, served over HTTP"
    tmp, cache = tmp_path_factory.mktemp("chromium"), {}
    def get(page):
        if page not in cache: cache[page] = _Page(_chromium(tmp, "--dump-dom", server + page))
        return cache[page]
    return get


def _http(url):
    with urllib.request.urlopen(url, timeout=30) as r: return r.status, r.headers.get("Content-Type", ""), r.read()


def _check_img(src, base):
    "An <img> src must load: a data: URI decoding to a picture, or a file the server returns"
    assert src, "<img> without src"
    if src.startswith("data:"):
        head, _, payload = src.partition(",")
        assert ";base64" in head, f"non-base64 data URI: {head}"
        data, mime = base64.b64decode(payload), head[5:].split(";")[0]
    else:
        assert not re.match(r"^[a-z]+://", src) or src.startswith(base), f"image from the network: {src}"
        status, mime, data = _http(src if src.startswith(base) else base + src.lstrip("/"))
        assert status == 200, src
    assert data, f"empty image {src[:80]}"
    if "svg" in mime: assert b"<svg" in data[:2000]; return
    if mime == "image/png": assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    im = Image.open(io.BytesIO(data)); im.verify()
    assert im.size[0] > 0 and im.size[1] > 0


def _has_picture(nb_path):
    "Whether a committed notebook shows a picture in a cell the docs keep"
    for c in json.loads(nb_path.read_text())["cells"]:
        if c["cell_type"] != "code": continue
        src = "".join(c["source"])
        if re.search(r"^#\|\s*(hide\b|include:\s*false|output:\s*false|export)", src, re.M): continue
        if any(k.startswith("image/") for o in c.get("outputs", []) for k in o.get("data", {})): return True
    return False


def test_index(dom, server):
    p = dom("index.html")
    assert p.title.strip() == "unet_fastai"
    want = [_page_name(nb) for nb in _module_nbs()]
    assert sorted(set(p.module_links)) == sorted(want), "index must link every module page"
    for page in want:
        assert page in p.links
        status, ctype, _ = _http(server + page)
        assert status == 200 and ctype.startswith("text/html"), page


def test_dynamicunet_page(dom):
    p = dom("models.unet.html")
    assert p.title.strip().startswith("DynamicUnet")
    # show_doc was executed: its rendered signature is an output, not the class's source
    sigs = [s for s in p.out_pres if re.search(r"\b(def|class)\s+DynamicUnet\s*\(", s)]
    assert sigs, "no rendered show_doc signature for DynamicUnet"
    assert all(w in sigs[0] for w in ("encoder", "n_out", "img_size")), sigs[0]
    assert any(re.search(r"\bdef\s+UnetBlock\s*\(|\bclass\s+UnetBlock\s*\(", s) for s in p.out_pres)
    assert "index.html" in p.links and "models.layers.html" in p.links     # the sidebar


def test_images_load(dom, server, site):
    "Every <img> on every page loads; pages whose notebooks saved pictures show them"
    for page in ("index.html", "models.unet.html"):
        for src in dom(page).imgs: _check_img(src, server)
    n = 0
    for nb in _module_nbs() + [NBS/"index.ipynb"]:
        page = _Page((site/_page_name(nb)).read_text(encoding="utf-8"))
        for src in page.imgs: _check_img(src, server)
        n += len(page.imgs)
        if _has_picture(nb): assert page.imgs, f"{nb.name} has pictures in its outputs but {_page_name(nb)} shows none"
    print(f"{n} images checked")


def test_screenshot(server, tmp_path):
    png = tmp_path/"unet.png"
    _chromium(tmp_path, f"--screenshot={png}", "--window-size=1200,2000", server + "models.unet.html")
    assert png.exists() and png.stat().st_size > 10_000, "screenshot missing or trivial"
    im = Image.open(png)
    assert im.size == (1200, 2000)
    assert len(im.convert("RGB").resize((120, 200)).getcolors(1 << 16) or range(1 << 16)) > 50, "blank screenshot"
    print(f"screenshot: {png}")
