"""Write README.md from nbs/index.ipynb (what `nbdev-readme` does where Quarto is installed).

Hidden cells and nbdev directives are dropped; markdown is kept; code cells become fenced blocks followed by their
text outputs. Images in outputs are left to the docs site."""
import json
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def _directives(src):
    return [l.strip()[3:].strip() for l in src.splitlines() if l.strip().startswith('#|')]


def cell_md(c):
    src = ''.join(c['source'])
    ds = _directives(src)
    if any(d.split()[0] in ('hide', 'export', 'exporti', 'default_exp') for d in ds if d): return None
    if c['cell_type'] == 'markdown': return src
    code = '\n'.join(l for l in src.splitlines() if not l.strip().startswith('#|')).strip()
    out = [f'```python\n{code}\n```'] if code else []
    for o in c.get('outputs', []):
        if o.get('name') == 'stderr': continue          # warnings from dependencies are not documentation
        txt = o.get('text') or o.get('data', {}).get('text/plain')
        if txt and 'image/png' not in o.get('data', {}) and 'text/html' not in o.get('data', {}):
            out.append('```\n' + ''.join(txt).rstrip() + '\n```')
    return '\n\n'.join(out) or None


def main():
    nb = json.loads((root/'nbs'/'index.ipynb').read_text())
    parts = [m for m in map(cell_md, nb['cells']) if m]
    txt = '<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->\n\n'
    (root/'README.md').write_text(txt + '\n\n'.join(parts).rstrip() + '\n')


if __name__ == '__main__': main()
