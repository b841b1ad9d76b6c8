/* Understand your chest scan report: the page's behaviour.
 *
 * Rules kept here on purpose:
 * - Everything from the person or the server goes into the page as text only
 *   (textContent, createTextNode, createElement); never as HTML.
 * - Nothing is stored: no localStorage, sessionStorage, cookies or IndexedDB.
 *   The state lives in this closure and "Clear everything" forgets it.
 * - No inline styles (the Content-Security-Policy forbids them): only classes and `hidden`.
 */
(function () {
  "use strict";

  const MAX_QUESTION_CHARS = 2000;
  const MAX_REPORT_CHARS = 50000;
  const MAX_FILE_BYTES = 2 * 1024 * 1024;
  const SUGGESTIONS_PER_THEME = 3;
  const MAX_IMAGE_FILES = 2000;
  const IMAGE_REQUESTS = 4;       // image files read at once
  const IMAGE_CACHE = 60;         // drawn images kept as object URLs
  const SVG_NS = "http://www.w3.org/2000/svg";

  const CERTAINTY_HIDDEN = {
    present: " (present)",
    absent: " (not present)",
    uncertain: " (uncertain)",
  };
  const CERTAINTY_WORDS = {
    present: "the report says this is there",
    absent: "the report says this is not there",
    uncertain: "the report is not sure",
  };
  const SOURCE_WORDS = {
    model: "Written by the AI model and checked against your report",
    model_image: "Written by the AI model, which was shown the picture on your screen, and checked against your report",
    template: "From the report's own words and the glossary",
  };
  const URGENT_KINDS = new Set(["urgent_question", "urgent_report"]);

  const $ = (id) => document.getElementById(id);

  // ---------- elements ----------
  const el = {};

  // ---------- state (never stored anywhere else) ----------
  const state = {
    view: null,              // the last ReportView shown
    readText: null,          // the textarea text that view was read from
    history: [],             // [{question, answer, theme, source, citations}]
    generation: 0,           // bumped by Clear: late replies of older requests are dropped
    reportController: null,  // AbortController of a report read or upload
    answerController: null,  // AbortController of an answer stream
    busyAnswer: false,
    asking: false,           // an ask() is under way (the report may be re-read first)
    focusableTerms: new Set(),  // terms already given a Tab stop in the shown report
    busyReport: false,
    restoreFocus: null,      // the Ask button, when it had focus before it was disabled
    tipCounter: 0,
    flashTimer: null,
    saveUrl: null,
    images: [],              // [{file, info}] of the opened scan images, in viewing order
    imageController: null,   // AbortController of the image files being read
    imageGeneration: 0,      // bumped by a new selection or Clear: late image replies are dropped
    imageIndex: -1,          // the image shown
    seesImages: false,       // the server's model is shown the picture on screen (GET /api/settings)
    imageUrls: new Map(),    // `${index}|${window}` -> object URL of its PNG (oldest first)
    renderController: null,  // AbortController of the image being drawn
    showGeneration: 0,       // bumped each time another image is asked for
    imageErrorKind: "",      // what the message in #image-error is about: load, render or jump
  };

  // ---------- small helpers ----------

  const numberFormat = new Intl.NumberFormat("en-US");
  const fmt = (n) => numberFormat.format(n);

  /** Characters as Python counts them (code points), so limits match the server's. */
  function charCount(text) {
    let n = 0;
    for (const _ of text) n += 1; // eslint-disable-line no-unused-vars
    return n;
  }

  function setText(node, text) {
    node.textContent = text == null ? "" : String(text);
  }

  function removeChildren(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = String(text);
    return node;
  }

  function isAbort(err) {
    return err && (err.name === "AbortError" || err.name === "TimeoutError");
  }

  const NETWORK_MESSAGE = "We could not reach the assistant. Please check your connection and try again.";

  /** The message of an error reply ({"error": {"message": ...}}), or a plain fallback. */
  async function errorMessage(response) {
    let message = "";
    try {
      const data = await response.json();
      if (data && data.error && typeof data.error.message === "string") {
        message = data.error.message;
      } else if (data && typeof data.detail === "string") {
        message = data.detail;
      }
    } catch (_) {
      /* not JSON */
    }
    return message || `Something went wrong (error ${response.status}). Please try again.`;
  }

  async function getJSON(url, options) {
    const response = await fetch(url, Object.assign({ headers: { Accept: "application/json" } }, options || {}));
    if (!response.ok) {
      const err = new Error(await errorMessage(response));
      err.isServer = true;
      throw err;
    }
    return response.json();
  }

  function showError(node, message) {
    setText(node, message || "");
  }

  // ---------- report: reading ----------

  function reportTooLongMessage(n) {
    return `This report has ${fmt(n)} characters; the most is 50,000.`;
  }

  /** Checks the report text; returns an error message or "". */
  function checkReport(text) {
    if (!text || !text.trim()) return "Please paste or choose a report first.";
    const n = charCount(text);
    if (n > MAX_REPORT_CHARS) return reportTooLongMessage(n);
    return "";
  }

  function setReportBusy(busy) {
    // Nothing is disabled here (that would take focus away from the select or button);
    // a second read simply replaces the first.
    state.busyReport = busy;
    el.reportView.setAttribute("aria-busy", busy ? "true" : "false");
    if (busy) setText(el.reportStatus, "Reading your report…");
  }

  /** Sends the textarea's text to /api/report and shows the result. Returns true when shown. */
  async function readReport() {
    const text = el.reportInput.value;
    showError(el.reportError, "");
    setText(el.reportStatus, "");
    const problem = checkReport(text);
    if (problem) {
      showError(el.reportError, problem);
      return false;
    }
    const view = await postForView("/api/report", "application/json", JSON.stringify({ text }));
    if (!view) return false;
    state.readText = text;
    showView(view);
    setText(el.reportStatus, "Your report is shown below, with its findings highlighted.");
    return true;
  }

  /**
   * POSTs to an endpoint that answers with a report view; null when it failed (the message is shown),
   * was replaced by a newer read, or was cleared. One read at a time: a new one aborts the last.
   */
  async function postForView(url, contentType, body) {
    if (state.reportController) state.reportController.abort();
    const controller = new AbortController();
    state.reportController = controller;
    const generation = state.generation;
    setReportBusy(true);
    try {
      const view = await getJSON(url, {
        method: "POST",
        headers: { "Content-Type": contentType, Accept: "application/json" },
        body,
        signal: controller.signal,
      });
      return generation === state.generation ? view : null;
    } catch (err) {
      if (isAbort(err) || generation !== state.generation) return null;
      setText(el.reportStatus, "");
      showError(el.reportError, err.isServer ? err.message : NETWORK_MESSAGE);
      return null;
    } finally {
      if (state.reportController === controller) {
        state.reportController = null;
        setReportBusy(false);
      }
    }
  }

  async function uploadFile() {
    showError(el.reportError, "");
    setText(el.reportStatus, "");
    const file = el.fileInput.files && el.fileInput.files[0];
    if (!file) return;
    const name = (file.name || "").toLowerCase();
    if (!(name.endsWith(".txt") || name.endsWith(".pdf"))) {
      showError(el.reportError, "Please choose a .txt or .pdf file.");
      el.fileInput.value = "";
      return;
    }
    if (file.size > MAX_FILE_BYTES) {
      const mb = file.size / (1024 * 1024);
      const shown = mb < 10 ? mb.toFixed(1) : String(Math.round(mb));
      showError(el.reportError, `This file is ${shown} MB; the most accepted is 2 MB.`);
      el.fileInput.value = "";
      return;
    }
    const view = await postForView("/api/upload", "application/octet-stream", file);
    if (!view) return;
    el.reportInput.value = typeof view.text === "string" ? view.text : "";
    state.readText = el.reportInput.value;
    el.exampleSelect.value = "";
    showView(view);
    setText(el.reportStatus, "Your file was read. Your report is shown below, with its findings highlighted.");
  }

  async function chooseExample() {
    const id = el.exampleSelect.value;
    showError(el.reportError, "");
    if (!id) return;
    const generation = state.generation;
    setText(el.reportStatus, "Opening the example…");
    let example;
    try {
      example = await getJSON(`/api/examples/${encodeURIComponent(id)}`);
    } catch (err) {
      if (generation !== state.generation) return;
      setText(el.reportStatus, "");
      showError(el.reportError, err.isServer ? err.message : NETWORK_MESSAGE);
      return;
    }
    if (generation !== state.generation) return;
    el.reportInput.value = typeof example.text === "string" ? example.text : "";
    el.fileInput.value = "";
    await readReport();
  }

  async function loadExamples() {
    try {
      const data = await getJSON("/api/examples");
      const examples = (data && Array.isArray(data.examples)) ? data.examples : [];
      for (const example of examples) {
        if (!example || example.id == null) continue;
        const option = document.createElement("option");
        option.value = String(example.id);
        option.textContent = String(example.title || example.id);
        el.exampleSelect.appendChild(option);
      }
    } catch (_) {
      // The examples are optional; the rest of the page works without them.
    }
  }

  // ---------- report: rendering ----------

  function leafText(nodes) {
    let out = "";
    for (const node of nodes || []) {
      if (!node || typeof node !== "object") continue;
      if (Array.isArray(node.children)) out += leafText(node.children);
      else if (typeof node.text === "string") out += node.text;
    }
    return out;
  }

  function renderNodes(nodes, parent, terms) {
    for (const node of nodes || []) {
      if (!node || typeof node !== "object") continue;
      if (node.kind === "finding") {
        const certainty = ["present", "absent", "uncertain"].includes(node.certainty) ? node.certainty : "uncertain";
        const mark = document.createElement("mark");
        mark.className = `finding finding-${certainty}` + (node.urgent ? " finding-urgent" : "");
        if (node.name) mark.dataset.finding = String(node.name);
        renderNodes(node.children, mark, terms);
        parent.appendChild(mark);
        let hidden = CERTAINTY_HIDDEN[certainty];
        if (node.urgent) hidden = hidden.replace(")", "; may need prompt attention)");
        parent.appendChild(make("span", "visually-hidden", hidden));
      } else if (node.kind === "term") {
        const entry = terms && node.term != null ? terms[node.term] : null;
        const definition = entry && typeof entry.definition === "string" ? entry.definition : "";
        if (!definition) {
          renderNodes(node.children, parent, terms);
          continue;
        }
        const span = make("span", "term");
        // one Tab stop per term (its first use): a report repeats its words, a keyboard user needs each once
        span.tabIndex = state.focusableTerms.has(node.term) ? -1 : 0;
        state.focusableTerms.add(node.term);
        span.dataset.term = String(node.term);
        state.tipCounter += 1;
        const tipId = `tip-${state.tipCounter}`;
        span.setAttribute("aria-describedby", tipId);
        renderNodes(node.children, span, terms);
        const tip = make("span", "tooltip", definition);
        tip.id = tipId;
        tip.setAttribute("role", "tooltip");
        span.appendChild(tip);
        parent.appendChild(span);
      } else if (Array.isArray(node.children)) {
        renderNodes(node.children, parent, terms);
      } else if (typeof node.text === "string") {
        parent.appendChild(document.createTextNode(node.text));
      }
    }
  }

  /** Plain text between sentences, with heading words in <span class="heading">. */
  function renderGap(text, from, to, headings, parent) {
    let pos = from;
    for (const h of headings) {
      const start = Math.max(h.start, pos);
      const end = Math.min(h.end, to);
      if (end <= start) continue;
      if (start > pos) parent.appendChild(document.createTextNode(text.slice(pos, start)));
      parent.appendChild(make("span", "heading", text.slice(start, end)));
      pos = end;
    }
    if (pos < to) parent.appendChild(document.createTextNode(text.slice(pos, to)));
  }

  /** UTF-16 index of each code point of `text` (and of its end): the server counts code points. */
  function unitOffsets(text) {
    const units = [0];
    let at = 0;
    for (const ch of text) {
      at += ch.length;
      units.push(at);
    }
    return units;
  }

  /** The images a sentence cites, as {series, image} (a range by its first image). */
  function citedImages(sentence) {
    const out = [];
    for (const c of Array.isArray(sentence && sentence.images) ? sentence.images : []) {
      if (!c || typeof c !== "object" || !Number.isInteger(c.image)) continue;
      out.push({ series: Number.isInteger(c.series) ? c.series : null, image: c.image });
    }
    return out;
  }

  /** "series 3, image 45", or "image 45" when the report names no series. */
  function citedName(series, image) {
    return series == null ? `image ${image}` : `series ${series}, image ${image}`;
  }

  function capitalise(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function citeButton(cited) {
    const button = make("button", "cite-image", `Show ${citedName(cited.series, cited.image)}`);
    button.type = "button";
    if (cited.series != null) button.dataset.series = String(cited.series);
    button.dataset.image = String(cited.image);
    return button;
  }

  function renderReport(view) {
    const text = typeof view.text === "string" ? view.text : "";
    const units = unitOffsets(text);
    const unit = (i) => units[Math.min(Math.max(i, 0), units.length - 1)];
    const inUnits = (x) => Object.assign({}, x, { start: unit(x.start), end: unit(x.end) });
    const headings = (Array.isArray(view.headings) ? view.headings : [])
      .filter((h) => h && Number.isInteger(h.start) && Number.isInteger(h.end) && h.end > h.start)
      .map(inUnits)
      .sort((a, b) => a.start - b.start);
    const sentences = (Array.isArray(view.sentences) ? view.sentences : [])
      .filter((s) => s && Number.isInteger(s.start) && Number.isInteger(s.end) && s.end >= s.start
        && s.end < units.length)
      .map(inUnits)
      .sort((a, b) => a.start - b.start);
    state.focusableTerms = new Set();
    const terms = view.terms && typeof view.terms === "object" ? view.terms : {};
    const fragment = document.createDocumentFragment();
    state.tipCounter = 0;
    let pos = 0;
    for (const s of sentences) {
      if (s.start < pos || s.end > text.length) continue; // overlapping or out of range: shown as plain text
      renderGap(text, pos, s.start, headings, fragment);
      const span = make("span", "sentence");
      const index = Number.isInteger(s.index) ? s.index : sentences.indexOf(s);
      span.id = `s-${index}`;
      span.dataset.index = String(index);
      if (s.section) span.dataset.section = String(s.section);
      span.tabIndex = -1;
      const own = text.slice(s.start, s.end);
      if (Array.isArray(s.nodes) && s.nodes.length && leafText(s.nodes) === own) {
        renderNodes(s.nodes, span, terms);
      } else {
        span.appendChild(document.createTextNode(own));
      }
      fragment.appendChild(span);
      // outside the sentence's span: its words (and the consistency check above) stay the report's own
      for (const cited of citedImages(s)) fragment.appendChild(citeButton(cited));
      pos = s.end;
    }
    renderGap(text, pos, text.length, headings, fragment);
    removeChildren(el.reportView);
    el.reportView.appendChild(fragment);
  }

  function renderFindings(findings) {
    removeChildren(el.findingsList);
    const list = Array.isArray(findings) ? findings : [];
    if (!list.length) {
      el.findingsList.appendChild(make("li", "", "None of the findings we look for are named in this report."));
      return;
    }
    for (const f of list) {
      if (!f || typeof f !== "object") continue;
      const certainty = ["present", "absent", "uncertain"].includes(f.certainty) ? f.certainty : "uncertain";
      const li = make("li", `certainty-${certainty}`);
      li.appendChild(make("span", "finding-name", f.name || f.finding || "A finding"));
      li.appendChild(document.createTextNode(`: ${CERTAINTY_WORDS[certainty]}.`));
      if (f.urgent) {
        li.appendChild(document.createTextNode(" "));
        li.appendChild(make("span", "urgent-flag", "It may need prompt attention."));
      }
      el.findingsList.appendChild(li);
    }
  }

  function showView(view) {
    state.view = view && typeof view === "object" ? view : null;
    if (!state.view) return;
    renderReport(state.view);
    renderFindings(state.view.findings);
    renderDiagram(state.view.diagram);
    el.reportEmpty.hidden = true;
    el.reportView.hidden = false;
    el.legend.hidden = false;
    el.findingsSummary.hidden = false;
    // A new report: the previous answer (and one still on its way) was about the old one.
    if (state.answerController) {
      state.answerController.abort();
      state.answerController = null;
      setAnswerBusy(false);
    }
    resetAnswer();
    resetNotices();
  }

  function clearReportView() {
    removeChildren(el.reportView);
    removeChildren(el.findingsList);
    el.reportView.hidden = true;
    el.legend.hidden = true;
    el.findingsSummary.hidden = true;
    el.reportEmpty.hidden = false;
    clearDiagram();
  }

  // ---------- tooltips ----------

  const narrowScreen = window.matchMedia ? window.matchMedia("(max-width: 40rem)") : null;

  function termsFrom(target) {
    const out = [];
    let node = target && target.closest ? target.closest(".term") : null;
    while (node && el.reportView.contains(node)) {
      out.push(node);
      node = node.parentElement ? node.parentElement.closest(".term") : null;
    }
    return out;
  }

  /** Opens a tooltip to the left when it would run past the right edge of the window. */
  function placeTooltip(term) {
    term.classList.remove("tip-flip");
    if (narrowScreen && narrowScreen.matches) return;
    const tip = term.querySelector(":scope > .tooltip");
    if (!tip) return;
    const rect = tip.getBoundingClientRect();
    if (!rect.width) return;
    const limit = document.documentElement.clientWidth - 8;
    if (rect.right > limit) term.classList.add("tip-flip");
  }

  function onTermEnter(event) {
    for (const term of termsFrom(event.target)) {
      if (event.type === "focusin" && term !== event.target) continue;
      placeTooltip(term);
    }
  }

  function onTermLeave(event) {
    const term = event.target && event.target.closest ? event.target.closest(".term") : null;
    if (!term) return;
    if (event.type === "mouseout" && event.relatedTarget && term.contains(event.relatedTarget)) return;
    if (event.type === "mouseout" && term === document.activeElement) return;
    term.classList.remove("tip-dismissed");
  }

  function onKeydownDocument(event) {
    if (event.key !== "Escape" && event.key !== "Esc") return;
    let hid = false;
    const active = document.activeElement;
    if (active && active.classList && active.classList.contains("term")) {
      active.classList.add("tip-dismissed");
      hid = true;
    }
    for (const term of el.reportView.querySelectorAll(".term:hover")) {
      term.classList.add("tip-dismissed");
      hid = true;
    }
    if (hid) event.preventDefault();
  }

  // ---------- citations ----------

  function goToSentence(index) {
    const target = document.getElementById(`s-${index}`);
    if (!target || !el.reportView.contains(target)) return;
    const reduce = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    try {
      target.focus({ preventScroll: true });
    } catch (_) {
      target.focus();
    }
    target.scrollIntoView({ behavior: reduce ? "auto" : "smooth", block: "center" });
    for (const old of el.reportView.querySelectorAll(".sentence.flash")) old.classList.remove("flash");
    void target.offsetWidth; // restart the animation
    target.classList.add("flash");
    if (state.flashTimer) clearTimeout(state.flashTimer);
    state.flashTimer = setTimeout(() => {
      target.classList.remove("flash");
      state.flashTimer = null;
    }, 2000);
  }

  function renderCitations(citations) {
    removeChildren(el.citationList);
    const list = Array.isArray(citations) ? citations : [];
    let shown = 0;
    for (const c of list) {
      if (!c || !Number.isInteger(c.index)) continue;
      const li = document.createElement("li");
      const button = make("button", "citation");
      button.type = "button";
      button.dataset.index = String(c.index);
      let text = typeof c.text === "string" && c.text ? c.text : "";
      if (!text && state.view && typeof state.view.text === "string" && Number.isInteger(c.start) && Number.isInteger(c.end)) {
        const units = unitOffsets(state.view.text);
        text = state.view.text.slice(units[c.start] || 0, units[c.end] || 0);
      }
      button.textContent = text || `Sentence ${c.index + 1}`;
      li.appendChild(button);
      el.citationList.appendChild(li);
      shown += 1;
    }
    el.citations.hidden = shown === 0;
  }

  // ---------- the chest diagram ----------

  const hasOwn = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
  const DROPPED_ELEMENTS = new Set(["style", "script", "foreignobject"]);

  /**
   * The server's drawing as an <svg> element of this page, or null when it is not a well-formed SVG.
   * It is parsed as XML, never as HTML; styles and scripts (which the CSP would refuse anyway), event
   * attributes, style attributes and links out of the drawing are removed before it is shown.
   */
  function importDrawing(text) {
    let doc;
    try {
      doc = new DOMParser().parseFromString(text, "image/svg+xml");
    } catch (_) {
      return null;
    }
    if (!doc || doc.getElementsByTagNameNS("*", "parsererror").length) return null;
    const root = doc.documentElement;
    if (!root || root.localName !== "svg" || root.namespaceURI !== SVG_NS) return null;
    const svg = document.importNode(root, true);
    for (const node of [svg, ...svg.getElementsByTagName("*")]) {
      if (node !== svg && DROPPED_ELEMENTS.has(node.localName.toLowerCase())) {
        node.remove();
        continue;
      }
      for (const attr of Array.from(node.attributes)) {
        const name = attr.name.toLowerCase();
        const link = name === "href" || name.endsWith(":href");
        if (name.startsWith("on") || name === "style" || (link && !attr.value.trim().startsWith("#"))) {
          node.removeAttribute(attr.name);
        }
      }
    }
    return svg;
  }

  /** The drawing, then each lit part (in the order the report names them) and what has no place on it. */
  function renderDiagram(diagram) {
    clearDiagram();
    if (!diagram || typeof diagram !== "object" || typeof diagram.svg !== "string") return;
    const drawing = importDrawing(diagram.svg);
    if (drawing) el.diagramFigure.appendChild(drawing);
    const parts = diagram.parts && typeof diagram.parts === "object" ? diagram.parts : {};
    const names = diagram.names && typeof diagram.names === "object" ? diagram.names : {};
    const spots = (Array.isArray(diagram.spots) ? diagram.spots : []).filter((s) => s && typeof s === "object");
    const nameOf = (part) => (hasOwn(names, part) && typeof names[part] === "string" && names[part]) || part;
    const order = [];
    for (const spot of spots) {
      const part = spot.part;
      if (typeof part === "string" && hasOwn(parts, part) && !order.includes(part)) order.push(part);
    }
    for (const part of Object.keys(parts)) {
      if (!order.includes(part)) order.push(part);
    }
    for (const part of order) {
      const here = spots.filter((s) => s.part === part);
      const findings = [...new Set(here.map((s) => (typeof s.finding === "string" ? s.finding : "")).filter(Boolean))];
      const unsure = parts[part] === "uncertain";
      let text = nameOf(part);
      if (findings.length) text += `: ${findings.join(", ")}`;
      if (unsure) text += " (the report is not sure)";
      const li = make("li", unsure ? "diagram-maybe" : "diagram-lit");
      li.appendChild(make("span", "diagram-part", text));
      const first = here.find((s) => Number.isInteger(s.sentence));
      if (first) {
        li.appendChild(document.createTextNode(" "));
        const button = make("button", "button-link", "Show in report");
        button.type = "button";
        button.dataset.index = String(first.sentence);
        button.setAttribute("aria-label", `Show in report: ${nameOf(part)}`);
        li.appendChild(button);
      }
      el.diagramList.appendChild(li);
    }
    if (!order.length) {
      el.diagramList.appendChild(make("li", "diagram-none", "The report places no finding it says is there, "
        + "or may be there, in the lungs, pleura, heart or mediastinum."));
    }
    const listed = new Set();
    for (const u of Array.isArray(diagram.unplaced) ? diagram.unplaced : []) {
      if (!u || typeof u !== "object" || typeof u.finding !== "string" || !u.finding) continue;
      const where = u.why === "elsewhere" ? "not part of this chest drawing" : "the report does not say where";
      const text = `${u.finding}: ${where}`;
      if (listed.has(text)) continue;  // a finding named in several sentences is listed once
      listed.add(text);
      el.diagramUnplaced.appendChild(make("li", "", text));
    }
    el.diagramUnplaced.hidden = listed.size === 0;
    el.diagramEmpty.hidden = true;
    el.diagramView.hidden = false;
  }

  function clearDiagram() {
    removeChildren(el.diagramFigure);
    removeChildren(el.diagramList);
    removeChildren(el.diagramUnplaced);
    el.diagramUnplaced.hidden = true;
    el.diagramView.hidden = true;
    el.diagramEmpty.hidden = false;
  }

  // ---------- scan images ----------

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const pathOrder = new Intl.Collator(undefined, { numeric: true });

  function reducedMotion() {
    return Boolean(window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches);
  }

  /** Shows `message` in #image-error; `kind` (load, render, jump) lets a later success clear only its own. */
  function imageError(message, kind) {
    showError(el.imageError, message);
    state.imageErrorKind = message ? kind || "" : "";
  }

  function clearImageError(kind) {
    if (state.imageErrorKind === kind) imageError("");
  }

  function imageFailure(err) {
    return err && (err.isServer || err.isLocal) ? err.message : NETWORK_MESSAGE;
  }

  /** A chosen file's bytes (read again for each drawing: only the File handles are kept). */
  async function fileBytes(file) {
    try {
      return await file.arrayBuffer();
    } catch (_) {
      const err = new Error("A file could not be read from your computer; it may have been moved or removed.");
      err.isLocal = true;
      throw err;
    }
  }

  /** POSTs one file's bytes; the response when it is OK, else an error carrying the server's message. */
  async function postImage(url, bytes, signal, accept) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream", Accept: accept },
      body: bytes,
      signal,
    });
    if (!response.ok) {
      const err = new Error(await errorMessage(response));
      err.isServer = true;
      throw err;
    }
    return response;
  }

  /** What /api/image/info said, with anything unexpected made null or empty. */
  function imageInfoOf(data) {
    const d = data && typeof data === "object" ? data : {};
    const whole = (x) => (Number.isInteger(x) ? x : null);
    return {
      kind: d.kind === "picture" ? "picture" : "dicom",
      modality: typeof d.modality === "string" ? d.modality.slice(0, 16) : "",
      series: whole(d.series),
      image: whole(d.image),
      position: typeof d.position === "number" && Number.isFinite(d.position) ? d.position : null,
      windows: Array.isArray(d.windows) ? d.windows.filter((w) => typeof w === "string") : [],
    };
  }

  /** By series (none first), then image number (none last), then position (none last). */
  function compareImages(a, b) {
    const by = (x, y, noneFirst) => {
      if (x === y) return 0;
      if (x == null) return noneFirst ? -1 : 1;
      if (y == null) return noneFirst ? 1 : -1;
      return x - y;
    };
    return by(a.info.series, b.info.series, true) || by(a.info.image, b.info.image, false)
      || by(a.info.position, b.info.position, false);
  }

  function countOf(n, one, many) {
    return n === 1 ? `1 ${one}` : `${fmt(n)} ${many}`;
  }

  /** "Opened 118 images (series 3: 116, series 2: 2); 3 files were not images and were skipped." */
  function openedStatus(images, skipped, tooBig) {
    let text;
    if (images.length === 1 && images[0].info.kind === "picture") {
      text = "Opened your picture";
    } else {
      const counts = new Map();
      let none = 0;
      for (const { info } of images) {
        if (info.series == null) none += 1;
        else counts.set(info.series, (counts.get(info.series) || 0) + 1);
      }
      const groups = [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])
        .map(([series, n]) => `series ${series}: ${fmt(n)}`);
      if (groups.length && none) groups.push(`no series number: ${fmt(none)}`);
      text = `Opened ${countOf(images.length, "image", "images")}` + (groups.length ? ` (${groups.join(", ")})` : "");
    }
    if (skipped) {
      text += skipped === 1 ? "; 1 file was not an image and was skipped"
        : `; ${fmt(skipped)} files were not images and were skipped`;
    }
    if (tooBig) {
      text += tooBig === 1 ? "; 1 file over 2 MB was skipped" : `; ${fmt(tooBig)} files over 2 MB were skipped`;
    }
    return `${text}.`;
  }

  /** Reads the files chosen in `input` (a few at a time), orders them and opens the viewer. */
  async function loadImages(input) {
    const chosen = Array.from(input.files || []);
    if (!chosen.length) return; // a dialog closed without a choice: what is open stays open
    const other = input === el.imageFiles ? el.imageFolder : el.imageFiles;
    other.value = ""; // one selection at a time: the other input must not show files that are not open
    forgetImages();
    imageError("");
    setText(el.imageStatus, "");
    let tooBig = 0;
    let files = [];
    for (const file of chosen) {
      const name = file.name || "";
      if (name.startsWith(".") || name.toUpperCase() === "DICOMDIR") continue;
      if (file.size > MAX_FILE_BYTES) tooBig += 1;
      else files.push(file);
    }
    const path = (f) => f.webkitRelativePath || f.name || "";
    files.sort((a, b) => pathOrder.compare(path(a), path(b)));
    let tooMany = "";
    if (files.length > MAX_IMAGE_FILES) {
      tooMany = `You chose ${fmt(files.length)} files: only the first ${fmt(MAX_IMAGE_FILES)} are read.`;
      files = files.slice(0, MAX_IMAGE_FILES);
      imageError(tooMany, "load");
    }
    if (!files.length) {
      imageError(tooBig ? `${countOf(tooBig, "file is", "files are")} over 2 MB; the most accepted is 2 MB each.`
        : "None of the chosen files is an image this page can open.", "load");
      return;
    }

    const controller = new AbortController();
    state.imageController = controller;
    const generation = state.imageGeneration;
    const total = files.length;
    const loaded = [];
    let failed = 0;
    let firstError = "";
    let done = 0;
    let next = 0;
    let shownAt = 0;
    const progress = () => {
      const now = Date.now();
      if (done < total && now - shownAt < 400) return; // a status a screen reader can keep up with
      shownAt = now;
      setText(el.imageStatus, `Reading images: ${fmt(done)} of ${fmt(total)}`);
    };
    progress();
    const worker = async () => {
      while (next < total && !controller.signal.aborted) {
        const file = files[next];
        next += 1;
        try {
          if (file.size === 0) throw new Error("empty");
          const bytes = await fileBytes(file);
          const response = await postImage("/api/image/info", bytes, controller.signal, "application/json");
          loaded.push({ file, info: imageInfoOf(await response.json()) });
        } catch (err) {
          if (controller.signal.aborted) return;
          failed += 1;
          if (!firstError && err && (err.isServer || err.isLocal || err instanceof TypeError)) {
            firstError = imageFailure(err);
          }
        }
        if (controller.signal.aborted) return;
        done += 1;
        progress();
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(IMAGE_REQUESTS, total) }, worker));
    } finally {
      if (state.imageController === controller) state.imageController = null;
    }
    if (controller.signal.aborted || generation !== state.imageGeneration) return;

    if (!loaded.length) {
      setText(el.imageStatus, "");
      let message = firstError || "None of the chosen files is an image this page can open.";
      if (firstError && failed > 1) message += ` (${fmt(failed)} files could not be read)`;
      imageError(tooMany ? `${message} ${tooMany}` : message, "load");
      return;
    }
    loaded.sort(compareImages);
    state.images = loaded;
    setText(el.imageStatus, openedStatus(loaded, failed, tooBig));
    el.windowChoice.hidden = !loaded.some((x) => x.info.windows.length);
    el.viewer.hidden = false;
    const cited = firstCitedIndex();
    showImage(cited >= 0 ? cited : Math.floor(loaded.length / 2));
  }

  /** Index among the opened images of the first image the report cites that is open; -1 when none. */
  function firstCitedIndex() {
    const sentences = state.view && Array.isArray(state.view.sentences) ? state.view.sentences : [];
    for (const sentence of sentences) {
      for (const c of citedImages(sentence)) {
        const i = findImage(c.series, c.image);
        if (i >= 0) return i;
      }
    }
    return -1;
  }

  /** The opened image with this number (and series, when given); -1 when it is not open. */
  /** The opened image a citation names; an image number without a series is looked for in the series on screen first. */
  function findImage(series, image) {
    if (series == null && state.imageIndex >= 0 && state.images[state.imageIndex]) {
      const current = state.images[state.imageIndex].info.series;
      const here = state.images.findIndex(({ info }) => info.image === image && info.series === current);
      if (here >= 0) return here;
    }
    return state.images.findIndex(({ info }) => info.image === image && (series == null || info.series === series));
  }

  function checkedWindow() {
    return el.windowChoice.querySelector("input[name='window']:checked");
  }

  function currentWindow() {
    const radio = checkedWindow();
    return radio ? radio.value : "mediastinum";
  }

  /** "Series 3, image 45 (12 of 118)", "Image 12 of 118" or "Your picture". */
  function sliceLabel(i) {
    const { info } = state.images[i];
    const n = state.images.length;
    const place = `${fmt(i + 1)} of ${fmt(n)}`;
    if (info.kind === "picture") return n === 1 ? "Your picture" : `Your picture (${place})`;
    const named = [];
    if (info.series != null) named.push(`series ${info.series}`);
    if (info.image != null) named.push(`image ${info.image}`);
    return named.length ? `${capitalise(named.join(", "))} (${place})` : `Image ${place}`;
  }

  /** "CT image, series 3, image 45, lungs window" (the window in the words of its radio's label). */
  function sliceAlt(i, win) {
    const { info } = state.images[i];
    if (info.kind === "picture") return "Your picture";
    const words = [`${info.modality || "Scan"} image`];
    if (info.series != null) words.push(`series ${info.series}`);
    if (info.image != null) words.push(`image ${info.image}`);
    const radio = checkedWindow();
    const label = radio && radio.labels && radio.labels[0] ? radio.labels[0].textContent.trim().toLowerCase() : "";
    if (label && info.windows.includes(win)) words.push(`${label} window`);
    return words.join(", ");
  }

  function updateSliceControls(i) {
    const n = state.images.length;
    const label = sliceLabel(i);
    setText(el.sliceLabel, label);
    el.sliceRange.max = String(Math.max(n - 1, 0));
    el.sliceRange.value = String(i);
    el.sliceRange.setAttribute("aria-valuetext", label);
    el.slicePrev.disabled = i <= 0;
    el.sliceNext.disabled = i >= n - 1;
    el.sliceControls.hidden = n < 2;
    // a button that has just been disabled drops the keyboard's place: keep it on the slider
    const active = document.activeElement;
    if ((active === el.slicePrev || active === el.sliceNext) && active.disabled) el.sliceRange.focus();
  }

  /** A drawn image as an object URL, kept for the last IMAGE_CACHE images asked for. */
  function rememberImage(key, blob) {
    const known = state.imageUrls.get(key);
    if (known) return known;
    const url = URL.createObjectURL(blob);
    state.imageUrls.set(key, url);
    while (state.imageUrls.size > IMAGE_CACHE) {
      const [oldest, oldUrl] = state.imageUrls.entries().next().value;
      state.imageUrls.delete(oldest);
      URL.revokeObjectURL(oldUrl);
    }
    return url;
  }

  function putSlice(url, i, win) {
    el.sliceImage.alt = sliceAlt(i, win);
    el.sliceImage.src = url;
    clearImageError("render");
  }

  /** Shows opened image `index` through the chosen window; a reply for an image already left is dropped. */
  async function showImage(index) {
    const n = state.images.length;
    if (!n) return;
    const i = Math.min(Math.max(Math.round(Number(index)) || 0, 0), n - 1);
    state.imageIndex = i;
    state.showGeneration += 1;
    const token = state.showGeneration;
    const generation = state.imageGeneration;
    if (state.renderController) state.renderController.abort();
    state.renderController = null;
    el.viewer.removeAttribute("aria-busy");
    updateSliceControls(i);
    const win = currentWindow();
    const key = `${i}|${win}`;
    const cached = state.imageUrls.get(key);
    if (cached) {
      state.imageUrls.delete(key); // the most recently shown last: evicted last
      state.imageUrls.set(key, cached);
      putSlice(cached, i, win);
      return;
    }
    const controller = new AbortController();
    state.renderController = controller;
    el.viewer.setAttribute("aria-busy", "true");
    try {
      await sleep(60); // a slider dragged or an arrow key held: only the image it stops on is drawn
      if (token !== state.showGeneration) return;
      const bytes = await fileBytes(state.images[i].file);
      if (token !== state.showGeneration) return;
      const response = await postImage(`/api/image/render?window=${encodeURIComponent(win)}`, bytes,
        controller.signal, "image/png");
      const blob = await response.blob();
      if (generation !== state.imageGeneration) return;
      const url = rememberImage(key, blob);
      if (token === state.showGeneration) putSlice(url, i, win);
    } catch (err) {
      if (isAbort(err) || token !== state.showGeneration) return;
      el.sliceImage.removeAttribute("src");
      el.sliceImage.alt = "";
      imageError(imageFailure(err), "render");
    } finally {
      if (state.renderController === controller) {
        state.renderController = null;
        el.viewer.removeAttribute("aria-busy");
      }
    }
  }

  /** A report's "series 3, image 45" button: that image in the viewer, or why it cannot be shown. */
  function jumpToImage(series, image) {
    const name = citedName(series, image);
    if (!state.images.length) {
      if (state.imageController) {
        imageError(`Your images are still being read; ${name} can be shown once they are open.`, "jump");
        el.imageError.scrollIntoView({ behavior: reducedMotion() ? "auto" : "smooth", block: "center" });
      } else {
        imageError(`To see ${name}, first open your scan images (the folder from your CD).`, "jump");
        el.imageFolder.focus();
      }
      return;
    }
    const i = findImage(series, image);
    if (i < 0) {
      imageError(`${capitalise(name)} is not among the images you opened.`, "jump");
      el.imageError.scrollIntoView({ behavior: reducedMotion() ? "auto" : "smooth", block: "center" });
      return;
    }
    clearImageError("jump");
    el.viewer.hidden = false;
    showImage(i);
    const target = el.sliceControls.hidden ? el.viewer : el.sliceRange;
    try {
      target.focus({ preventScroll: true });
    } catch (_) {
      target.focus();
    }
    el.viewer.scrollIntoView({ behavior: reducedMotion() ? "auto" : "smooth", block: "start" });
  }

  /** Stops reading and drawing, and forgets the opened images and their drawings. */
  function forgetImages() {
    state.imageGeneration += 1;
    state.showGeneration += 1;
    if (state.imageController) state.imageController.abort();
    if (state.renderController) state.renderController.abort();
    state.imageController = null;
    state.renderController = null;
    for (const url of state.imageUrls.values()) URL.revokeObjectURL(url);
    state.imageUrls = new Map();
    state.images = [];
    state.imageIndex = -1;
    el.sliceImage.removeAttribute("src");
    el.sliceImage.alt = "";
    setText(el.sliceLabel, "");
    el.sliceRange.max = "0";
    el.sliceRange.value = "0";
    el.sliceRange.removeAttribute("aria-valuetext");
    el.viewer.removeAttribute("aria-busy");
    el.viewer.hidden = true;
  }

  function clearImages() {
    forgetImages();
    el.imageFiles.value = "";
    el.imageFolder.value = "";
    imageError("");
    setText(el.imageStatus, "");
    el.windowMediastinum.checked = true;
    el.windowChoice.hidden = false;
  }

  // ---------- notices ----------

  function noticeKey(kind, text) {
    return `${kind}\u0000${text}`;
  }

  function addNotice(kind, text) {
    if (!text) return;
    kind = String(kind || "info").replace(/[^a-z0-9_-]/gi, "") || "info";
    text = String(text);
    const key = noticeKey(kind, text);
    for (const existing of el.notices.children) {
      if (existing.dataset.key === key) return;
    }
    const urgent = URGENT_KINDS.has(kind);
    const div = make("div", `notice notice-${kind}` + (urgent ? " notice-urgent" : ""), text);
    div.dataset.key = key;
    div.dataset.kind = kind;
    if (urgent) {
      div.setAttribute("role", "alert");
      // urgent notices first, in the order they came
      let before = null;
      for (const existing of el.notices.children) {
        if (!URGENT_KINDS.has(existing.dataset.kind)) {
          before = existing;
          break;
        }
      }
      el.notices.insertBefore(div, before);
    } else {
      el.notices.appendChild(div);
    }
  }

  /** Shows only the notices about the report itself (from the last report read). */
  function resetNotices() {
    removeChildren(el.notices);
    const notices = state.view && Array.isArray(state.view.notices) ? state.view.notices : [];
    for (const n of notices) {
      if (n && typeof n === "object") addNotice(n.kind, n.text);
    }
  }

  // ---------- questions ----------

  function updateCount() {
    const n = charCount(el.questionInput.value);
    setText(el.questionCount, `${fmt(n)} / 2,000`);
    el.questionCount.classList.toggle("count-over", n > MAX_QUESTION_CHARS);
    if (n <= MAX_QUESTION_CHARS && el.questionError.textContent.startsWith("Your question has")) {
      showError(el.questionError, "");
    }
  }

  function setAnswerBusy(busy) {
    state.busyAnswer = busy;
    if (busy && document.activeElement === el.ask) state.restoreFocus = el.ask;
    el.ask.disabled = busy;
    // Suggestions stay focusable while busy (aria-disabled), so keyboard users keep their place.
    for (const b of el.suggestions.querySelectorAll("button.suggestion")) {
      if (busy) b.setAttribute("aria-disabled", "true");
      else b.removeAttribute("aria-disabled");
    }
    el.answerText.setAttribute("aria-busy", busy ? "true" : "false");
    setText(el.answerStatus, busy ? "Reading your report…" : "");
    if (!busy && state.restoreFocus) {
      const target = state.restoreFocus;
      state.restoreFocus = null;
      const active = document.activeElement;
      if (!active || active === document.body) target.focus();
    }
  }

  function resetAnswer() {
    setText(el.answerTheme, "");
    removeChildren(el.answerText);
    setText(el.answerSource, "");
    removeChildren(el.citationList);
    el.citations.hidden = true;
    el.answerEmpty.hidden = false;
  }

  async function ask() {
    if (state.busyAnswer || state.asking) return;
    state.asking = true;  // from the first click: a second one while the report is re-read must not race it
    try {
      await askNow();
    } finally {
      state.asking = false;
    }
  }

  async function askNow() {
    showError(el.questionError, "");
    const question = el.questionInput.value;
    if (!question.trim()) {
      showError(el.questionError, "Please type a question.");
      el.questionInput.focus();
      return;
    }
    const qn = charCount(question);
    if (qn > MAX_QUESTION_CHARS) {
      showError(el.questionError, `Your question has ${fmt(qn)} characters; the most is 2,000.`);
      el.questionInput.focus();
      return;
    }
    const typed = el.reportInput.value;
    if (!typed.trim() && !state.view) {
      showError(el.questionError, "Please paste or choose a report first.");
      return;
    }
    if (typed.trim()) {
      const rn = charCount(typed);
      if (rn > MAX_REPORT_CHARS) {
        const message = reportTooLongMessage(rn);
        showError(el.questionError, message);
        showError(el.reportError, message);
        return;
      }
    }
    const generation = state.generation;
    // The report in the box changed since it was last shown (or was never shown): read it first,
    // so the answer's citations point at the sentences on the page.
    if (typed.trim() && (!state.view || typed !== state.readText)) {
      const ok = await readReport();
      if (generation !== state.generation) return;
      if (!ok) {
        showError(el.questionError, el.reportError.textContent || "Please paste or choose a report first.");
        return;
      }
    }
    const report = state.view && typeof state.view.text === "string" ? state.view.text : typed;
    await streamAnswer(report, question, generation);
  }

  async function streamAnswer(report, question, generation) {
    if (state.answerController) state.answerController.abort();
    const controller = new AbortController();
    state.answerController = controller;
    resetAnswer();
    resetNotices();
    setAnswerBusy(true);
    const entry = { question, answer: "", theme: "", source: "", citations: [] };
    let gotAnswer = false;
    let streamed = "";

    const handle = (event) => {
      if (!event || typeof event !== "object") return;
      if (event.type === "notice") {
        addNotice(event.kind, event.text);
      } else if (event.type === "piece") {
        if (typeof event.text === "string" && event.text) {
          streamed += event.text;
          el.answerEmpty.hidden = true;
          el.answerText.appendChild(document.createTextNode(event.text));
        }
      } else if (event.type === "answer") {
        gotAnswer = true;
        const text = typeof event.text === "string" ? event.text : streamed;
        setText(el.answerText, text);
        el.answerEmpty.hidden = Boolean(text) || Boolean(streamed);
        setText(el.answerTheme, event.theme_name ? `Theme: ${event.theme_name}` : "");
        setText(el.answerSource, SOURCE_WORDS[event.source] || "");
        renderCitations(event.citations);
        for (const n of Array.isArray(event.notices) ? event.notices : []) {
          if (n && typeof n === "object") addNotice(n.kind, n.text);
        }
        entry.answer = text;
        entry.theme = event.theme_name || "";
        entry.source = SOURCE_WORDS[event.source] || "";
        entry.citations = (Array.isArray(event.citations) ? event.citations : [])
          .map((c) => (c && typeof c.text === "string" ? c.text : ""))
          .filter(Boolean);
      } else if (event.type === "error") {
        showError(el.questionError, typeof event.message === "string" && event.message
          ? event.message : "Something went wrong while answering. Please try again.");
      }
    };

    try {
      const picture = await shownPicture();
      if (generation !== state.generation) return;
      const response = await fetch("/api/answer", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/x-ndjson" },
        body: JSON.stringify(picture ? { report, question, image: picture } : { report, question }),
        signal: controller.signal,
      });
      if (generation !== state.generation) return;
      if (response.status !== 200) {
        const message = await errorMessage(response);
        if (generation === state.generation) showError(el.questionError, message);
        return;
      }
      if (!response.body || !response.body.getReader) {
        // Very old browsers: read it all at once.
        const whole = await response.text();
        for (const line of whole.split("\n")) parseLine(line, handle);
      } else {
        const reader = response.body.getReader();
        const decoder = new TextDecoder("utf-8");
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (generation !== state.generation) {
            try { reader.cancel(); } catch (_) { /* ignore */ }
            return;
          }
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut = buffer.indexOf("\n");
          while (cut !== -1) {
            parseLine(buffer.slice(0, cut), handle);
            buffer = buffer.slice(cut + 1);
            cut = buffer.indexOf("\n");
          }
        }
        buffer += decoder.decode();
        parseLine(buffer, handle);
      }
      if (!gotAnswer && streamed) entry.answer = streamed;
      if (entry.answer) state.history.push(entry);
      if (!gotAnswer && !el.questionError.textContent) {
        showError(el.questionError, streamed
          ? "The answer stopped early. Please try asking again."
          : "No answer came back. Please try asking again.");
      }
    } catch (err) {
      if (isAbort(err) || generation !== state.generation) return;
      showError(el.questionError, NETWORK_MESSAGE);
    } finally {
      if (state.answerController === controller) {
        state.answerController = null;
        setAnswerBusy(false);
      }
    }
  }

  function parseLine(line, handle) {
    const trimmed = line.trim();
    if (!trimmed) return;
    let event;
    try {
      event = JSON.parse(trimmed);
    } catch (_) {
      return; // a broken line: skip it
    }
    handle(event);
  }

  /** What the server's model can do: when it sees images, the note says so and questions carry the picture. */
  async function loadSettings() {
    let data;
    try {
      data = await getJSON("/api/settings");
    } catch (_) {
      return; // the page then says the assistant reads the report only, which is the safe thing to say
    }
    state.seesImages = Boolean(data && data.sees_images === true);
    if (state.seesImages) {
      setText($("images-model-note"), "The assistant can look at the picture on your screen: when you ask where "
        + "something is, or what the picture shows, it is sent with your report. An AI reading an image can be "
        + "wrong, so its words are checked against your report and only your radiologist can say what a scan shows.");
    }
  }

  /** The picture on screen as a PNG data URL, for a model that sees images; null when none is shown. */
  async function shownPicture() {
    if (!state.seesImages || !state.images.length) return null;
    const url = state.imageUrls.get(`${state.imageIndex}|${currentWindow()}`);
    if (!url) return null;
    try {
      const blob = await (await fetch(url)).blob();
      return await new Promise((resolve, reject) => {
        const reader = new FileReader();
        // a picture too large for a request (2 MB) is left out: the question is asked without it
        reader.onload = () => resolve(typeof reader.result === "string" && reader.result.length < 1900000
          ? reader.result : null);
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(blob);
      });
    } catch (_) {
      return null; // the question is still asked, without the picture
    }
  }

  async function loadThemes() {
    let data;
    try {
      data = await getJSON("/api/themes");
    } catch (_) {
      return; // suggestions are optional
    }
    const themes = data && Array.isArray(data.themes) ? data.themes : [];
    removeChildren(el.suggestions);
    for (const theme of themes) {
      if (!theme || !Array.isArray(theme.suggestions) || !theme.suggestions.length) continue;
      const group = make("div", "suggestion-group");
      const heading = make("h3", "", theme.name || theme.id || "Questions");
      const headingId = `theme-${String(theme.id || el.suggestions.children.length).replace(/[^a-z0-9_-]/gi, "")}`;
      heading.id = headingId;
      group.appendChild(heading);
      const ul = make("ul", "suggestion-list");
      ul.setAttribute("aria-labelledby", headingId);
      for (const text of theme.suggestions.slice(0, SUGGESTIONS_PER_THEME)) {
        if (typeof text !== "string" || !text) continue;
        const li = document.createElement("li");
        const button = make("button", "suggestion", text);
        button.type = "button";
        li.appendChild(button);
        ul.appendChild(li);
      }
      group.appendChild(ul);
      el.suggestions.appendChild(group);
    }
  }

  // ---------- save and clear ----------

  function conversationText() {
    const lines = [];
    lines.push("Understand your chest scan report");
    lines.push("This assistant explains the words in a report. It is an AI, not a diagnosis.");
    lines.push("");
    const report = state.view && typeof state.view.text === "string" ? state.view.text : el.reportInput.value;
    if (report.trim()) {
      lines.push("YOUR REPORT");
      lines.push(report);
      lines.push("");
    }
    if (state.history.length) {
      lines.push("QUESTIONS AND ANSWERS");
      state.history.forEach((h, i) => {
        lines.push("");
        lines.push(`Question ${i + 1}: ${h.question}`);
        if (h.theme) lines.push(`(Theme: ${h.theme})`);
        lines.push(`Answer: ${h.answer}`);
        if (h.source) lines.push(`(${h.source})`);
        if (h.citations.length) {
          lines.push("From your report:");
          for (const c of h.citations) lines.push(`  - ${c}`);
        }
      });
    }
    return lines.join("\n") + "\n";
  }

  function save() {
    const hasReport = (state.view && state.view.text) || el.reportInput.value.trim();
    if (!hasReport && !state.history.length) {
      setText(el.saveStatus, "There is nothing to save yet.");
      return;
    }
    const blob = new Blob([conversationText()], { type: "text/plain;charset=utf-8" });
    if (state.saveUrl) URL.revokeObjectURL(state.saveUrl);
    state.saveUrl = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = state.saveUrl;
    a.download = "my-chest-scan-report-conversation.txt";
    a.hidden = true;
    document.body.appendChild(a);
    a.click();
    a.remove();
    const url = state.saveUrl;
    setTimeout(() => {
      URL.revokeObjectURL(url);
      if (state.saveUrl === url) state.saveUrl = null;
    }, 10000);
    setText(el.saveStatus, "The conversation was saved to your device as a text file.");
  }

  function clearEverything() {
    state.generation += 1;
    if (state.reportController) state.reportController.abort();
    if (state.answerController) state.answerController.abort();
    state.reportController = null;
    state.answerController = null;
    if (state.flashTimer) clearTimeout(state.flashTimer);
    state.flashTimer = null;
    if (state.saveUrl) URL.revokeObjectURL(state.saveUrl);
    state.saveUrl = null;
    state.view = null;
    state.readText = null;
    state.history = [];
    state.tipCounter = 0;

    el.reportInput.value = "";
    el.fileInput.value = "";
    el.exampleSelect.value = "";
    el.questionInput.value = "";
    showError(el.reportError, "");
    showError(el.questionError, "");
    setText(el.reportStatus, "");
    setText(el.saveStatus, "");
    setReportBusy(false);
    state.restoreFocus = null;
    setAnswerBusy(false);
    clearReportView();
    clearImages();
    resetAnswer();
    removeChildren(el.notices);
    updateCount();
    el.reportInput.focus();
  }

  // ---------- wiring ----------

  function init() {
    Object.assign(el, {
      reportInput: $("report-input"),
      readReport: $("read-report"),
      fileInput: $("file-input"),
      exampleSelect: $("example-select"),
      openExample: $("open-example"),
      reportError: $("report-error"),
      reportStatus: $("report-status"),
      reportEmpty: $("report-empty"),
      reportView: $("report-view"),
      legend: $("legend"),
      findingsSummary: $("findings-summary"),
      findingsList: $("findings-list"),
      questionInput: $("question-input"),
      questionCount: $("question-count"),
      ask: $("ask"),
      questionError: $("question-error"),
      suggestions: $("suggestions"),
      notices: $("notices"),
      answerStatus: $("answer-status"),
      answerTheme: $("answer-theme"),
      answerText: $("answer-text"),
      answerEmpty: $("answer-empty"),
      answerSource: $("answer-source"),
      citations: $("citations"),
      citationList: $("citation-list"),
      clear: $("clear"),
      save: $("save"),
      saveStatus: $("save-status"),
      imageFiles: $("image-files"),
      imageFolder: $("image-folder"),
      imageError: $("image-error"),
      imageStatus: $("image-status"),
      viewer: $("viewer"),
      windowChoice: $("window-choice"),
      windowMediastinum: $("window-mediastinum"),
      sliceImage: $("slice-image"),
      sliceLabel: $("slice-label"),
      sliceRange: $("slice-range"),
      slicePrev: $("slice-prev"),
      sliceNext: $("slice-next"),
      diagramEmpty: $("diagram-empty"),
      diagramView: $("diagram-view"),
      diagramFigure: $("diagram-figure"),
      diagramList: $("diagram-list"),
      diagramUnplaced: $("diagram-unplaced"),
    });
    el.sliceControls = el.viewer.querySelector(".slice-controls");

    el.readReport.addEventListener("click", () => { readReport(); });
    el.fileInput.addEventListener("change", () => { uploadFile(); });
    // a button, not the select's change event: arrowing through a closed select must not load a report each step
    el.openExample.addEventListener("click", () => { chooseExample(); });
    el.reportInput.addEventListener("input", () => {
      if (el.reportError.textContent) showError(el.reportError, "");
    });

    el.questionInput.addEventListener("input", updateCount);
    el.questionInput.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        ask();
      }
    });
    el.ask.addEventListener("click", () => { ask(); });

    el.suggestions.addEventListener("click", (event) => {
      const button = event.target.closest ? event.target.closest("button.suggestion") : null;
      if (!button || state.busyAnswer) return;
      el.questionInput.value = button.textContent;
      updateCount();
      ask();
    });

    el.citationList.addEventListener("click", (event) => {
      const button = event.target.closest ? event.target.closest("button.citation") : null;
      if (!button) return;
      goToSentence(button.dataset.index);
    });

    el.reportView.addEventListener("click", (event) => {
      const button = event.target.closest ? event.target.closest("button.cite-image") : null;
      if (!button) return;
      const series = button.dataset.series ? Number(button.dataset.series) : null;
      jumpToImage(series, Number(button.dataset.image));
    });
    el.diagramList.addEventListener("click", (event) => {
      const button = event.target.closest ? event.target.closest("button.button-link") : null;
      if (!button) return;
      goToSentence(button.dataset.index);
    });

    el.imageFiles.addEventListener("change", () => { loadImages(el.imageFiles); });
    el.imageFolder.addEventListener("change", () => { loadImages(el.imageFolder); });
    el.windowChoice.addEventListener("change", () => {
      if (state.images.length) showImage(state.imageIndex);
    });
    el.sliceRange.addEventListener("input", () => { showImage(el.sliceRange.value); });
    el.slicePrev.addEventListener("click", () => { showImage(state.imageIndex - 1); });
    el.sliceNext.addEventListener("click", () => { showImage(state.imageIndex + 1); });

    el.reportView.addEventListener("mouseover", onTermEnter);
    el.reportView.addEventListener("focusin", onTermEnter);
    el.reportView.addEventListener("mouseout", onTermLeave);
    el.reportView.addEventListener("focusout", onTermLeave);
    document.addEventListener("keydown", onKeydownDocument);

    el.clear.addEventListener("click", clearEverything);
    el.save.addEventListener("click", save);

    updateCount();
    loadExamples();
    loadThemes();
    loadSettings();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
