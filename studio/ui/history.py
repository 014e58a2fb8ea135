"""The History tab: every saved picture, searched through the history index (studio/outputs/
index.py): words of the prompt, model, sampler, tab, seed, dates; sorted and paged. A picture
opens in PNG Info, which sends its settings to any tab. API: `/history_search`, and `/history`
(the newest pictures, as before)."""

from __future__ import annotations

import math

import gradio as gr

from studio.errors import StudioError
from studio.outputs.index import SORTS, Query
from studio.fields import number
from studio.serving.studio import Studio
from studio.ui.jobs import login
from studio.ui.widgets import selected_index

PAGE_SIZE = 48
ANY = "any"
# the tab's first page and the searches answer one after another, in the order they were asked:
# unqueued, a slow first page could land after a quick search and overwrite what was found
IN_ORDER = dict(api_visibility="private", concurrency_id="history", concurrency_limit=1, show_progress="minimal")


def build(studio: Studio):
    """The tab; returns (refresh: the first page and the filters' choices, what it fills, the PNG
    Info button, the shown paths, the selected index)."""
    with gr.Row():
        words = gr.Textbox(label="Search the prompts", placeholder="red circle", scale=3, elem_id="history-words")
        sort = gr.Dropdown(list(SORTS), value="newest", label="Sort", scale=1, elem_id="history-sort")
    with gr.Row():
        model = gr.Dropdown([ANY], value=ANY, label="Model", elem_id="history-model")
        sampler = gr.Dropdown([ANY], value=ANY, label="Sampler", elem_id="history-sampler")
        tab = gr.Dropdown([ANY], value=ANY, label="Made by", elem_id="history-tab")
        seed = gr.Textbox("", label="Seed (blank: any)", elem_id="history-seed")
        since = gr.Textbox(label="From (YYYY-MM-DD)", elem_id="history-since")
        until = gr.Textbox(label="To (YYYY-MM-DD)", elem_id="history-until")
    with gr.Row():
        search = gr.Button("🔍 Search", variant="primary", elem_id="history-search")
        previous = gr.Button("◀ Newer page", elem_id="history-previous")
        following = gr.Button("Older page ▶", elem_id="history-next")
        page = gr.Number(1, precision=0, label="Page", minimum=1, elem_id="history-page")
    found = gr.Markdown("", elem_id="history-found")
    gallery = gr.Gallery(label="Saved pictures", columns=8, height=520, format="png", interactive=False,
                         elem_id="history-gallery")
    to_pnginfo = gr.Button("Open the selected picture in PNG Info (and send it on from there)",
                           elem_id="history-to-pnginfo")
    paths, selected = gr.State([]), gr.State(0)

    def history_search(query: str = "", model: str = ANY, sampler: str = ANY, tab: str = ANY, seed: str | int | None = None,
                       since: str = "", until: str = "", sort: str = "newest", page: int = 1,
                       page_size: int = PAGE_SIZE, request: gr.Request = None) -> dict:
        """Saved pictures matching every word of `query` (prompt, negative prompt or model), and the
        filters; `page` of `page_size`; your own pictures when the studio has logins. Returns {total,
        page, pages, pictures: [{file, prompt, seed, model, sampler, tab, width, height, created,
        parameters}]}."""
        try:
            q = Query(words=str(query or ""), model="" if model in (None, ANY) else model,
                      sampler="" if sampler in (None, ANY) else sampler, tab="" if tab in (None, ANY) else tab,
                      seed=None if seed is None or str(seed).strip() == "" else number("Seed", seed, integer=True),
                      since=_day("From", since), until=_day("To", until), sort=sort or "newest",
                      page=number("Page", page or 1, integer=True), page_size=number("Page size", page_size, integer=True))
            total, rows = studio.search_history(q, login(request))
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        keep = ("file", "prompt", "seed", "model", "sampler", "tab", "width", "height", "created", "parameters")
        return {"total": total, "page": q.page, "pages": max(1, math.ceil(total / max(1, q.page_size))),
                "pictures": [{k: row[k] for k in keep} for row in rows]}

    def show(words, model, sampler, tab, seed, since, until, sort, page, request: gr.Request = None):
        answer = history_search(words, model, sampler, tab, seed, since, until, sort, page, request=request)
        pictures = answer["pictures"]
        text = f"**{answer['total']} picture(s)** · page {answer['page']} of {answer['pages']}"
        return ([(p["file"], f"seed {p['seed']} · {p['prompt'][:60]}") for p in pictures], text,
                [p["file"] for p in pictures], answer["page"])

    filters = [words, model, sampler, tab, seed, since, until, sort, page]
    outputs = [gallery, found, paths, page]
    def turning(to_page):
        def turn(words, model, sampler, tab, seed, since, until, sort, page, request: gr.Request):
            return show(words, model, sampler, tab, seed, since, until, sort, to_page(int(page or 1)), request)
        return turn

    search.click(turning(lambda page: 1), filters, outputs, **IN_ORDER)
    words.submit(turning(lambda page: 1), filters, outputs, **IN_ORDER)
    previous.click(turning(lambda page: max(1, page - 1)), filters, outputs, **IN_ORDER)
    following.click(turning(lambda page: page + 1), filters, outputs, **IN_ORDER)
    gallery.select(selected_index, None, selected, api_visibility="private", queue=False)
    gr.api(history_search, api_name="history_search")
    gr.api(_newest(studio), api_name="history")

    def refresh(request: gr.Request):
        """The first page of everything, and the filters' choices from the index."""
        lists = [gr.Dropdown(choices=[ANY, *studio.history_choices(column, login(request))])
                 for column in ("model", "sampler", "tab")]
        return (*show("", ANY, ANY, ANY, "", "", "", "newest", 1, request), *lists)

    return refresh, outputs + [model, sampler, tab], to_pnginfo, paths, selected


def _day(label: str, value) -> str:
    text = str(value or "").strip()
    if text and not (len(text) == 10 and text[4] == text[7] == "-" and text.replace("-", "").isdigit()):
        raise StudioError(f"{label} must be a date like 2026-12-03, got {text!r}.")
    return text


def _newest(studio: Studio):
    def history(limit: int = 100, request: gr.Request = None) -> list[dict]:
        """The newest saved images (your own when the studio has logins): file, seed and prompt of
        each (from the history index)."""
        total, rows = studio.search_history(Query(page_size=max(1, min(int(limit or 100), 1000))), login(request))
        return [{"file": row["file"], "seed": row["seed"], "prompt": row["prompt"]} for row in rows]
    return history
