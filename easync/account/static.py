"""The account page's style sheet and its one small script, served from
``/account/static/`` (the Content-Security-Policy allows scripts and styles from the
page's own origin only: no inline script, no inline style)."""

from __future__ import annotations

import hashlib

CSS = """\
:root { --fg: #1d2433; --muted: #5b6475; --line: #d7dce5; --bg: #f4f6f9;
  --card: #fff; --accent: #1f5fbf; --accent-fg: #fff; --ok: #1e7b3a; --ok-bg: #e6f4ea;
  --err: #a32020; --err-bg: #fdecec; --warn-bg: #fff6df; --warn: #7a5300; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; font: 17px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
header { background: var(--card); border-bottom: 1px solid var(--line); }
header .bar { max-width: 44rem; margin: 0 auto; padding: .6rem 1rem; display: flex;
  align-items: center; gap: .75rem; flex-wrap: wrap; }
header .brand { font-weight: 700; margin-right: auto; color: var(--fg);
  text-decoration: none; }
header nav { display: flex; gap: .5rem; align-items: center; }
header .who { color: var(--muted); font-size: .9rem; flex-basis: 100%; }
button.small, a.button.small { min-height: 40px; padding: .35rem .8rem; margin: 0;
  font-size: .95rem; }
main { max-width: 44rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.45rem; margin: .4rem 0 1rem; }
h2 { font-size: 1.15rem; margin: 0 0 .6rem; }
section.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 1rem; margin: 0 0 1rem; }
p { margin: .4rem 0 .8rem; }
.muted { color: var(--muted); font-size: .95rem; }
label { display: block; font-weight: 600; margin: .8rem 0 .3rem; }
input[type=text], input[type=password], input[type=email], select {
  width: 100%; min-height: 48px; padding: .6rem .75rem; font-size: 1.05rem;
  border: 1px solid #aab2c0; border-radius: 8px; background: #fff; color: var(--fg); }
input:focus, select:focus, button:focus, a.button:focus {
  outline: 3px solid #8fb3ee; outline-offset: 1px; }
input.code { letter-spacing: .35em; font-size: 1.4rem; text-align: center;
  font-variant-numeric: tabular-nums; max-width: 14rem; }
button, a.button { display: inline-flex; align-items: center; justify-content: center;
  min-height: 48px; min-width: 48px; padding: .6rem 1.1rem; margin: .6rem .4rem 0 0;
  font: inherit; font-weight: 600; border-radius: 8px; border: 1px solid var(--accent);
  background: var(--accent); color: var(--accent-fg); text-decoration: none;
  cursor: pointer; }
button.secondary, a.button.secondary { background: #fff; color: var(--accent); }
button.danger { background: var(--err); border-color: var(--err); }
button.link { background: none; border: none; color: var(--accent); padding: .6rem .2rem;
  text-decoration: underline; font-weight: 500; }
form.inline { display: inline; }
.flash { border-radius: 8px; padding: .75rem 1rem; margin: 0 0 1rem; font-weight: 500; }
.flash.ok { background: var(--ok-bg); color: var(--ok); border: 1px solid #b7dfc2; }
.flash.error { background: var(--err-bg); color: var(--err); border: 1px solid #f2b8b8; }
.flash.warn, .warn { background: var(--warn-bg); color: var(--warn);
  border: 1px solid #f0d590; border-radius: 8px; padding: .75rem 1rem; }
dl.facts { display: grid; grid-template-columns: minmax(8rem, max-content) 1fr;
  gap: .35rem 1rem; margin: .2rem 0 .6rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; font-weight: 500; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: .05rem .55rem; border-radius: 999px;
  font-size: .9rem; font-weight: 600; background: #e8ecf3; color: var(--fg); }
.badge.on { background: var(--ok-bg); color: var(--ok); }
.badge.off { background: #eceef2; color: var(--muted); }
.badge.bad { background: var(--err-bg); color: var(--err); }
.secret { font: 600 1.35rem/1.4 ui-monospace, "SFMono-Regular", Menlo, monospace;
  background: #f0f3f8; border: 1px dashed #8a96aa; border-radius: 8px;
  padding: .75rem; overflow-wrap: anywhere; user-select: all; }
.qr { display: block; width: 220px; max-width: 100%; height: auto; margin: .5rem 0;
  background: #fff; padding: 8px; border: 1px solid var(--line); }
ul.list { list-style: none; padding: 0; margin: 0; }
ul.list > li { border-top: 1px solid var(--line); padding: .75rem 0; }
ul.list > li:first-child { border-top: none; }
.row-title { font-weight: 700; overflow-wrap: anywhere; }
.actions { display: flex; flex-wrap: wrap; align-items: center; }
.actions form { margin: 0; }
footer { max-width: 44rem; margin: 0 auto; padding: 0 1rem 2rem; }
@media (max-width: 30rem) {
  dl.facts { grid-template-columns: 1fr; gap: 0 0; }
  dl.facts dd { margin-bottom: .45rem; }
  button, a.button { width: 100%; margin-right: 0; }
  button.link, button.small, a.button.small { width: auto; }
  .actions form { width: 100%; }
}
"""

JS = """\
// Progressive enhancement only: every form works without this script.
(function () {
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var target = document.getElementById(button.getAttribute("data-copy"));
      if (!target || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(target.textContent.trim()).then(function () {
        button.textContent = button.getAttribute("data-copied") || "Copied";
      });
    });
  });
})();
"""

FILES: dict[str, tuple[bytes, bytes]] = {
    "style.css": (CSS.encode("utf-8"), b"text/css; charset=utf-8"),
    "account.js": (JS.encode("utf-8"), b"text/javascript; charset=utf-8"),
}

# A version tag for the URLs, so browsers may cache the files for long.
VERSION = hashlib.sha256(CSS.encode() + JS.encode()).hexdigest()[:10]
