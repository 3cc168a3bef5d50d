#!/usr/bin/env python3
"""Reads a rendered status page (Chromium's --dump-dom) on stdin and prints
what a person sees on it as JSON: the title, the fields of the list at the
top (by their label), each table (by id) as rows keyed by column header,
the paragraphs that stand in for empty tables (by id), and the number of
script elements."""

import json
import sys
from html.parser import HTMLParser


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.out = {"title": "", "fields": {}, "tables": {}, "paras": {},
                    "scripts": 0}
        self.text = None        # text being collected, or None
        self.where = None       # "title", "dt", "dd", "cell", "para"
        self.label = None       # the last <dt>
        self.table = None       # id of the table being read
        self.row = None
        self.heads = []
        self.para = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.out["scripts"] += 1
        elif tag in ("title", "dt", "dd"):
            self.where, self.text = tag, ""
        elif tag == "table":
            self.table, self.heads = a.get("id", ""), []
            self.out["tables"][self.table] = []
        elif tag == "tr" and self.table is not None:
            self.row = []
        elif tag in ("th", "td") and self.row is not None:
            self.where, self.text = tag, ""
        elif tag == "p" and a.get("id"):
            self.para, self.where, self.text = a["id"], "p", ""

    def handle_endtag(self, tag):
        t = " ".join((self.text or "").split())
        if tag == "title" and self.where == "title":
            self.out["title"] = t
        elif tag == "dt" and self.where == "dt":
            self.label = t
        elif tag == "dd" and self.where == "dd":
            self.out["fields"][self.label] = t
        elif tag in ("th", "td") and self.row is not None:
            self.row.append((tag, t))
        elif tag == "tr" and self.row is not None:
            if all(k == "th" for k, _ in self.row):
                self.heads = [v for _, v in self.row]
            else:
                self.out["tables"][self.table].append(
                    dict(zip(self.heads, [v for _, v in self.row])))
            self.row = None
        elif tag == "table":
            self.table = None
        elif tag == "p" and self.where == "p":
            self.out["paras"][self.para] = t
            self.para = None
        if tag in ("title", "dt", "dd", "th", "td", "p"):
            self.where, self.text = None, None

    def handle_data(self, data):
        if self.text is not None:
            self.text += data


p = Page()
p.feed(sys.stdin.read())
if not p.out["title"]:
    sys.exit("no title: not the status page")
json.dump(p.out, sys.stdout, indent=1)
