"""Build the documentation site into `_docs/` (what `make docs` runs).

Where Quarto is installed this simply runs `nbdev-docs`. Otherwise it builds a plain, offline HTML site:

1. nbdev's own notebook processing (`nbdev.serve`, the machinery behind `nbdev-proc-nbs`) writes every notebook in
   `nbs/` to `_proc/` with its frontmatter extracted, hidden cells dropped, and a `show_doc` cell inserted after each
   exported symbol. nbdev's `exec_show_docs` processor runs the exported cells, the imports and every `show_doc` cell in
   a captured IPython shell, so `_proc/` holds the rendered signatures as markdown outputs. Other cells keep the
   outputs (pictures included) saved in the committed notebooks. nbdev also executes whole cells that mix imports
   with other code; by default only their imports are run here (their saved outputs are kept), which is faster and
   does not fail where such a cell needs an earlier, unexecuted cell. `--strict` runs them whole, as `nbdev-docs` does.
2. Each processed notebook is rendered with nbconvert's `lab` HTML template (inline CSS, output pictures and markdown
   attachments embedded as base64, other files linked from markdown copied alongside) to `_docs/<page>.html`, where
   `<page>` is nbdev's page name (`02_unet.ipynb` -> `unet.html`, as on the Quarto site and in `_modidx.py`, so
   symbol links work locally). Every page gets a sidebar linking all pages;
   `_docs/index.html` is `nbs/index.ipynb` plus a list of every module page. Nothing is fetched from the network,
   except MathJax (loaded async, only on pages with maths; without it the TeX shows as source).

`_proc/` is reused between runs for notebooks that have not changed (nbdev's mtime cache); `--force` rebuilds it.
"""
import argparse, ast, html, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SHOW_DIRS = {'export', 'exports', 'exporti', 'exec_doc'}


# ---------------------------------------------------------------------------------------------------------------------
# 1. nbdev processing (runs in worker processes)

def _make_filter(strict, notes):
    "nbdev's `FilterDefaults`, with `exec_show_docs` running only the imports of cells that mix imports and code"
    from fastcore.xtras import str2bool
    from nbdev.processors import FilterDefaults, _do_eval, _show_docs
    from nbdev.processors import exec_show_docs as _nbdev_exec

    class exec_show_docs(_nbdev_exec):      # same name, so nbdev's `skip_procs` setting still applies
        def __call__(self, cell):
            if strict or not hasattr(self, 'k') or not getattr(self.nb, 'has_docs_', False): return super().__call__(cell)
            if str2bool(getattr(self.nb, 'frontmatter_', {}).get('skip_showdoc', False)): return
            if not _do_eval(cell): return
            trees = cell.parsed_()
            imps = [t for t in trees if isinstance(t, (ast.Import, ast.ImportFrom))]
            if cell.directives_.keys() & _SHOW_DIRS or _show_docs(trees) or len(imps) == len(trees):
                return super().__call__(cell)   # exported code, show_doc and pure-import cells: exactly as nbdev
            # A cell nbdev runs only because it contains imports: run those imports, keep the saved outputs.
            where = f"{Path(self.nb.path_).name} cell {cell.idx_}"
            notes.append(f"{where}: mixes imports and code; ran only its imports (`--strict` runs all, as nbdev-docs)")
            if not imps: return
            self.k.run('\n'.join(ast.unparse(t) for t in imps))
            if self.k.exc is not None:
                notes.append(f"{where}: its imports failed: {type(self.k.exc).__name__}: {self.k.exc}")
                self.k.exc = None

    class Filter(FilterDefaults):
        def base_procs(self): return [exec_show_docs if p is _nbdev_exec else p for p in super().base_procs()]
    return Filter()


def _proc_one(job):
    "Process one notebook `src` to `dst` as `nbdev.serve_drv` does; returns (src, notes, error)"
    src, dst, strict = job
    from fastcore.nbio import read_nb, write_nb
    notes = []
    if not strict:   # we report these cells ourselves, once each
        import warnings; warnings.filterwarnings('ignore', message='Found cells containing imports and other code')
    os.environ['IN_TEST'] = '1'               # as nbdev.serve_drv: nbdev_export() in notebooks does nothing
    try:
        mtime = Path(src).stat().st_mtime
        nb = read_nb(src)
        _make_filter(strict, notes)(nb)
        write_nb(nb, dst)
        os.utime(dst, (mtime, mtime))   # a notebook saved while we processed it stays newer, so is redone next time
        return str(src), notes, None
    except Exception as e:
        return str(src), notes, f"{type(e).__name__}: {e}"
    finally: os.environ.pop('IN_TEST', None)


def process(n_workers, strict=False, force=False):
    "Process `nbs/` into `_proc/` (nbdev's `proc_nbs`, with our notebook filter); returns (cache, nbs, notes, errors)"
    from fastcore.parallel import parallel
    from nbdev.config import get_config
    from nbdev.doclinks import nbglob
    import nbdev.serve as srv
    cfg = get_config()
    cache, path = cfg.config_path/'_proc', Path(cfg.nbs_path)
    files = nbglob(path, func=Path, file_glob='', file_re='')
    files.extend(nbglob(path, func=Path, file_glob='_metadata.y*ml', skip_file_re='^[.]'))
    chk = max(cfg.config_file.stat().st_mtime, Path(srv.__file__).stat().st_mtime, Path(__file__).stat().st_mtime)
    cache.mkdir(parents=True, exist_ok=True)
    stamp, mode = cache/'.docs-mode', 'strict' if strict else 'imports-only'   # what the cached notebooks were built with
    if force or cache.stat().st_mtime < chk or not stamp.exists() or stamp.read_text() != mode:
        shutil.rmtree(cache); cache.mkdir(); stamp.write_text(mode)
    srv._rm_stale(cache, path)
    jobs = [(s, d, strict) for s, d, _ in files.map(srv._proc_file, cache=cache, path=path).filter()]
    print(f"docs: processing {len(jobs)} notebook(s) with nbdev into {cache.relative_to(ROOT)}/", flush=True)
    res = parallel(_proc_one, jobs, n_workers=min(n_workers, len(jobs)), pause=0.01, method='spawn') if jobs else []
    notes = [n for _, ns, _ in res for n in ns]
    errors = {src: err for src, _, err in res if err}
    cache.touch()
    return cache, path, notes, errors


# ---------------------------------------------------------------------------------------------------------------------
# 2. HTML rendering

_CSS = """
<style>
body.jp-Notebook { margin: 0; padding: 0; }
#site-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 240px; overflow-y: auto; box-sizing: border-box;
  padding: 18px 14px; background: #f6f7f9; border-right: 1px solid #dde1e6; font: 14px/1.45 system-ui, sans-serif; }
#site-nav .site-title { display: block; font-weight: 700; font-size: 18px; margin-bottom: 12px; color: #222; }
#site-nav ul { list-style: none; margin: 0; padding: 0; }
#site-nav li a { display: block; padding: 4px 8px; border-radius: 4px; color: #333; text-decoration: none; }
#site-nav li a:hover { background: #e6e9ee; }
#site-nav li a.active { background: #dfe8f7; color: #0b57d0; font-weight: 600; }
body.jp-Notebook > main { margin-left: 240px; padding: 12px 28px 48px; max-width: 1100px; }
.jp-RenderedMarkdown pre { font-family: var(--jp-code-font-family, monospace); background: #f5f6f8;
  padding: 6px 10px; border-radius: 4px; overflow-x: auto; white-space: pre-wrap; word-break: normal;
  overflow-wrap: break-word; }
.docs-description { font-size: 1.15em; color: #555; margin-bottom: 1.2em; }
.docs-error { border: 2px solid #d33; background: #fff3f3; padding: 8px 12px; margin: 8px 0; white-space: pre-wrap; }
#module-list li { margin: 4px 0; }
@media (max-width: 800px) { #site-nav { position: static; width: auto; border-right: 0; }
  body.jp-Notebook > main { margin-left: 0; } }
</style>
"""

_CELL_KEYS = {'cell_type', 'id', 'metadata', 'source', 'outputs', 'execution_count', 'attachments'}


def _frontmatter(nb):
    "Pop nbdev's YAML frontmatter raw cell(s) from `nb`, returning the merged dict"
    import yaml
    fm = {}
    for c in list(nb.cells):
        if c.cell_type == 'raw' and c.source.strip().startswith('---'):
            try: d = yaml.safe_load(c.source.strip().strip('-')) or {}
            except yaml.YAMLError: continue
            if isinstance(d, dict): fm.update(d); nb.cells.remove(c)
    return fm


def _source_title(nb_path):
    "Title and description from a source notebook's first `# ` heading (and the `> ` line after it)"
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    for c in nb['cells']:
        if c['cell_type'] != 'markdown': continue
        lines = ''.join(c['source']).splitlines()
        for i, l in enumerate(lines):
            if l.startswith('# '):
                rest = [m.strip() for m in lines[i+1:] if m.strip()]
                return l[2:].strip(), rest[0][1:].strip() if rest and rest[0].startswith('>') else ''
    return Path(nb_path).stem, ''


def _inline(s):
    "Escape `s` for HTML, with `code` spans"
    return re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(s))


_PANDOC_LINK = re.compile(r'\[([^\]\n]+)\]\(([^)\s]+)\)\{([^}\n]*)\}')
_FENCED_DIV = re.compile(r'^:::+\s*\{?\s*\.?([\w-]+)[^}\n]*\}?\s*$')


def _md(src):
    "Quarto markdown extensions that plain markdown would show verbatim: link attributes and `:::` divs"
    src = _PANDOC_LINK.sub(lambda m: f'<a href="{html.escape(m[2])}" {m[3]}>{m[1]}</a>', src)
    out = []
    for l in src.split('\n'):
        m = _FENCED_DIV.match(l.strip()) if l.lstrip().startswith(':::') else None
        if m: out += ['', f'<div class="{m[1]}">', '']
        elif l.strip() and set(l.strip()) == {':'}: out += ['', '</div>', '']
        else: out.append(l)
    return '\n'.join(out)


def _directives(src):
    "Quarto `#| key: value` cell options, and the source without them"
    ds, keep = {}, []
    for l in src.splitlines():
        if l.startswith('#|'):
            k, _, v = l[2:].partition(':')
            ds[k.strip()] = v.strip().lower()
        else: keep.append(l)
    return ds, '\n'.join(keep).strip('\n')


def _prep(nb, title, desc, extra_md=None):
    "Turn a processed notebook into one nbconvert renders as the docs page"
    from nbformat.v4 import new_markdown_cell
    cells = []
    for c in nb.cells:
        if c.cell_type == 'markdown':
            c.source = _md(c.source)
            if c.source.strip() == '<!-- WARNING: THIS FILE WAS AUTOGENERATED! DO NOT EDIT! -->': continue
        elif c.cell_type == 'code':
            ds, c.source = _directives(c.source)
            if ds.get('include') == 'false': continue
            if ds.get('output') == 'false': c.outputs = []
            if ds.get('echo') == 'false' or not c.source.strip():
                c.metadata.setdefault('transient', {})['remove_source'] = True
            if not c.source.strip() and not c.outputs: continue
            for o in c.get('outputs', []):
                if 'data' in o and 'text/markdown' in o.data:
                    md = o.data['text/markdown']
                    o.data['text/markdown'] = _md(''.join(md) if isinstance(md, list) else md)
        elif c.cell_type == 'raw': continue
        for k in [k for k in c if k not in _CELL_KEYS]: del c[k]     # nbdev's own attributes (`has_sd`, ...)
        c.metadata.pop('execution', None)                             # execnb's timings: not valid nbformat
        cells.append(c)
    head = f'# {title}\n\n' + (f'<p class="docs-description">{_inline(desc)}</p>\n' if desc else '')
    nb.cells = [new_markdown_cell(head)] + ([new_markdown_cell(extra_md)] if extra_md else []) + cells
    nb.metadata['title'] = title
    return nb


def _nav(pages, current, site_title):
    act = lambda p: ' class="active"' if p['file'] == current else ''
    items = '\n'.join(f'<li><a href="{p["file"]}"{act(p)}>{html.escape(p["title"])}</a></li>' for p in pages)
    return (f'<nav id="site-nav"><a class="site-title" href="index.html">{html.escape(site_title)}</a>\n'
            f'<ul>\n{items}\n</ul></nav>\n')


def _post(body, nav, site_url, has_math):
    "Fix up nbconvert's HTML: offline scripts, sidebar, local links, nbdev-style (lowercase) anchors"
    body = re.sub(r'<script[^>]*src="https?://[^"]*require[^"]*"[^>]*>\s*</script>\s*', '', body)
    if has_math: body = re.sub(r'<script src="(https?://[^"]*mathjax[^"]*)">', r'<script async src="\1">', body)
    else:
        body = re.sub(r'<script[^>]*src="https?://[^"]*mathjax[^"]*"[^>]*>\s*</script>\s*', '', body, flags=re.I)
        body = re.sub(r'<script type="text/x-mathjax-config">.*?</script>\s*', '', body, flags=re.S)
    body = body.replace('</head>', _CSS + '</head>', 1)
    body = re.sub(r'(<body[^>]*>)', lambda m: m[1] + '\n' + nav, body, count=1)
    if site_url: body = body.replace(f'href="{site_url}', 'href="')
    body = re.sub(r'(<h[1-6] id=")([^"]+)(")', lambda m: m[1] + m[2].lower() + m[3], body)
    body = re.sub(r'(class="anchor-link" href="#)([^"]+)(")', lambda m: m[1] + m[2].lower() + m[3], body)
    return body


def render(cache, nbs, out, errors):
    import nbformat
    from nbconvert import HTMLExporter
    from nbdev.config import get_config, nbpath2html
    cfg = get_config()
    site_title = cfg.get('title', None) or cfg.lib_name
    site_url = (cfg.get('doc_host', '') or '').rstrip('/') + '/' + (cfg.get('doc_baseurl', '') or '').strip('/') + '/'
    if site_url == '/': site_url = ''
    srcs = sorted(p for p in nbs.rglob('*.ipynb') if not any(o.startswith(('.', '_')) for o in p.relative_to(nbs).parts))
    pages = []
    for s in srcs:
        rel = s.relative_to(nbs)
        title, desc = _source_title(s)
        pages.append(dict(src=s, proc=cache/rel, file=nbpath2html(rel).as_posix(), title=title, desc=desc))
    pages.sort(key=lambda p: (p['file'] != 'index.html', str(p['src'].relative_to(nbs))))
    if not any(p['file'] == 'index.html' for p in pages):
        pages.insert(0, dict(src=None, proc=None, file='index.html', title=site_title, desc=''))
    mods = [p for p in pages if p['file'] != 'index.html']
    # Output pictures are inlined as base64 by the template; files linked from markdown are copied next to the pages
    # (nbconvert's `embed_images` would re-parse, and break, the inline HTML that show_doc's source links need).
    exp = HTMLExporter(template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True)
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    for p in pages:
        failed = p['src'] is not None and str(p['src']) in errors
        if p['src'] is None:
            nb = nbformat.v4.new_notebook()
        else:
            nb = nbformat.read(p['src'] if failed or not p['proc'].exists() else p['proc'], as_version=4)
        fm = _frontmatter(nb)
        title = p['title'] if p['src'] is not None else site_title
        desc = p['desc'] or fm.get('description', '')
        if failed:   # render from source, saying why there are no signatures
            nb.cells = [c for c in nb.cells if not (c.cell_type == 'markdown' and c.source.startswith('# '))
                        and not (c.cell_type == 'code' and re.match(r'#\|\s*hide\b', c.source))]
            nb.cells.insert(0, nbformat.v4.new_markdown_cell(
                f'<div class="docs-error">nbdev could not process this notebook, so its API docs are missing:\n\n'
                f'{html.escape(errors[str(p["src"])][:2000])}</div>'))
        extra = None
        if p['file'] == 'index.html':
            items = '\n'.join(f'<li><a href="{m["file"]}">{html.escape(m["title"])}</a>'
                              + (f' &mdash; {_inline(m["desc"])}' if m['desc'] else '') + '</li>' for m in mods)
            extra = f'## Documentation pages\n\n<ul id="module-list">\n{items}\n</ul>\n'
        nb = _prep(nb, title, desc, extra)
        has_math = any(c.cell_type == 'markdown' and re.search(r'\$[^$\s][^$]*\$', c.source) for c in nb.cells)
        body, _ = exp.from_notebook_node(nb, resources={'metadata': {
            'name': title, 'path': str((p['src'] or nbs/'index.ipynb').parent)}})
        if p['file'] != 'index.html':
            body = re.sub(r'<title>.*?</title>', f'<title>{html.escape(title)} &ndash; {html.escape(site_title)}</title>',
                          body, count=1, flags=re.S)
        else: body = re.sub(r'<title>.*?</title>', f'<title>{html.escape(site_title)}</title>', body, count=1, flags=re.S)
        dest = out/p['file']
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_post(body, _nav(pages, p['file'], site_title), site_url, has_math), encoding='utf-8')
    # Non-notebook files next to the notebooks (pictures linked from markdown, ...) are copied along.
    for f in cache.rglob('*'):
        if f.is_file() and f.suffix not in ('.ipynb', '.yml', '.yaml', '.md', '.qmd', '.py') and \
                not any(o.startswith(('.', '_')) for o in f.relative_to(cache).parts):
            (out/f.relative_to(cache)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out/f.relative_to(cache))
    (out/'.nojekyll').touch()
    return out/'index.html', len(pages)


# ---------------------------------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--no-quarto', action='store_true', help="build the plain HTML site even if Quarto is installed")
    ap.add_argument('--strict', action='store_true', help="run cells mixing imports and code whole, as nbdev-docs")
    ap.add_argument('--force', action='store_true', help="ignore the `_proc/` cache")
    ap.add_argument('--n-workers', type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument('--out', default='_docs', help="output folder, relative to the project root")
    a = ap.parse_args(argv)
    os.chdir(ROOT)
    quarto = shutil.which('quarto')
    if quarto and not a.no_quarto:
        exe = Path(sys.executable).parent/'nbdev-docs'
        rc = subprocess.call([str(exe) if exe.exists() else 'nbdev-docs'])
        if rc == 0: print(ROOT/'_docs'/'index.html')
        return rc
    t0 = time.time()
    cache, nbs, notes, errors = process(a.n_workers, strict=a.strict, force=a.force)
    t1 = time.time()
    index, n = render(cache, nbs, ROOT/a.out, errors)
    for n_ in notes: print(f"docs: note: {n_}")
    for src, err in errors.items(): print(f"docs: ERROR processing {Path(src).relative_to(ROOT)}:\n{err}", file=sys.stderr)
    print(f"docs: {n} pages ({t1-t0:.0f}s nbdev processing, {time.time()-t1:.0f}s rendering)"
          + (f"; {len(errors)} notebook(s) failed and were rendered without API docs" if errors else ""))
    print(index)
    return 1 if errors else 0


if __name__ == '__main__':
    # Run as the importable module `docs`, so spawned nbdev workers can unpickle `_proc_one` by name.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import docs
    sys.exit(docs.main())
