// fashionlens web page: choose or drop a photo -> tags, category path and similar catalogue items.
// Plain DOM code (no build step). Server text is always inserted with textContent, never as HTML.
"use strict";

const K = 12;
const OFF_TAGS_SHOWN = 6;
const $ = (id) => document.getElementById(id);
let available = {};
let generation = 0; // answers of an older query are dropped when a newer one has started
let lastFile = null; // the uploaded photo, searched again when attribute steering is switched

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(p) { return `${Math.round(p * 100)}%`; }

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

function upload(url, blob, name) {
  const form = new FormData();
  form.append("image", blob, name);
  return call(url, { method: "POST", body: form });
}

function describeModels(info) {
  const parts = [];
  if (info.tagger) parts.push(`tagger: ${info.tagger.tags.length} labels`);
  if (info.hierarchy) parts.push(`categories: ${info.hierarchy.levels.join(" › ")}`);
  if (info.index) parts.push(`catalogue: ${info.index.count} items`);
  return parts.join(" · ") || "no models loaded";
}

function renderCategory(category) {
  const box = $("category");
  box.replaceChildren();
  box.hidden = !category;
  if (!category) return;
  box.append(el("h3", "", "Category"));
  const path = el("div", "path");
  for (const level of category.levels) {
    const step = el("span", "", `${level.class} `);
    step.title = `${level.level}: ${percent(level.probability)}`;
    step.append(el("small", "muted", `(${percent(level.probability)})`));
    path.append(step);
  }
  box.append(path);
  const others = category.alternatives.slice(1).map((a) => `${a.class} ${percent(a.probability)}`);
  if (others.length) box.append(el("div", "alt", `or: ${others.join(", ")}`));
}

function tagRow(score) {
  const row = el("div", `tag ${score.decision ? "on" : "off"}`);
  row.title = `probability ${score.probability}, threshold ${score.threshold}`;
  const bar = el("div", "bar");
  const fill = el("i");
  fill.style.width = percent(score.probability);
  const mark = el("b");
  mark.style.left = percent(score.threshold);
  bar.append(fill, mark);
  row.append(el("span", "name", score.label), bar, el("span", "", percent(score.probability)));
  return row;
}

function renderTags(answer) {
  const box = $("tags");
  box.replaceChildren();
  box.hidden = !answer.tags;
  if (!answer.tags) return;
  box.append(el("h3", "", `Tags (${answer.labels.length} above threshold)`));
  for (const [head, value] of Object.entries(answer.heads || {})) {
    box.append(el("div", "heads", `${head}: ${value.class} (${percent(value.probability)})`));
  }
  const on = answer.tags.filter((s) => s.decision);
  const off = answer.tags.filter((s) => !s.decision).slice(0, OFF_TAGS_SHOWN);
  for (const score of on.concat(off)) box.append(tagRow(score));
}

function renderSteering(answer) {
  // Which of the photo's attributes re-ranked the hits (or why none did).
  const box = $("steering");
  const steered = answer && answer.steered_by;
  box.hidden = !(steered || (answer && answer.note));
  if (!steered) {
    box.textContent = (answer && answer.note) || "";
    return;
  }
  const parts = [steered.category, ...steered.colours].map(
    (a) => `${a.label} ${percent(a.probability)} → ${a.catalogue.join(", ")}`);
  box.textContent = `Steered by: ${parts.join(" · ")}`;
}

function renderResults(results, title) {
  $("results-panel").hidden = false;
  $("results-title").textContent = title;
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of results) {
    const card = el("button", "item");
    card.type = "button";
    card.dataset.itemId = hit.item_id;
    const img = el("img");
    img.src = `${hit.image_url}?size=256`;
    img.alt = hit.item_id;
    img.loading = "lazy";
    const meta = hit.metadata || {};
    const name = meta.productDisplayName || meta.articleType || hit.item_id;
    const details = [meta.articleType, meta.baseColour, meta.gender].filter(Boolean).join(" · ");
    card.append(img, el("div", "title", name), el("div", "meta", `${details} · ${hit.score.toFixed(3)}`));
    card.title = `${name} (score ${hit.score.toFixed(4)})`;
    card.addEventListener("click", () => showItem(hit.item_id, hit.image_url, name));
    grid.append(card);
  }
  if (!results.length) grid.append(el("p", "muted", "No matching items."));
}

async function analyse(blob, name, searchRequest, resultsTitle) {
  const mine = ++generation;
  setStatus("Analysing…");
  const jobs = [];
  jobs.push(available.tag ? upload("/v1/tag", blob, name) : Promise.resolve(null));
  jobs.push(searchRequest ? searchRequest() : Promise.resolve(null));
  const [tagged, found] = await Promise.allSettled(jobs);
  if (mine !== generation) return;
  const problems = [];
  if (tagged.status === "fulfilled" && tagged.value) {
    renderTags(tagged.value);
    renderCategory(tagged.value.category);
  } else if (tagged.status === "rejected") {
    renderTags({});
    renderCategory(null);
    problems.push(`tags: ${tagged.reason.message}`);
  }
  if (found.status === "fulfilled" && found.value) {
    renderResults(found.value.results, resultsTitle);
    renderSteering(found.value);
    drawCrop(found.value.crop, found.value.image);
  } else if (found.status === "rejected") {
    problems.push(`search: ${found.reason.message}`);
  }
  setStatus(problems.join(" · ") || "Done. Click an item to see items similar to it.", problems.length > 0);
}

// The box the search used, drawn over the photo in percentages of the image's size (so it follows any scaling).
function drawCrop(crop, image) {
  const box = $("crop-box");
  const note = $("crop-note");
  box.hidden = !crop || crop.fallback || !image || !image.width;
  note.hidden = !crop;
  if (!crop) return;
  note.textContent = crop.fallback ? `Searched the whole photo: ${crop.reason}`
    : `Searched the ${crop.mode === "auto" ? "garment found" : "box"} at ${crop.box_text}`;
  if (box.hidden) return;
  const [x0, y0, x1, y1] = crop.box;
  box.style.left = `${(100 * x0) / image.width}%`;
  box.style.top = `${(100 * y0) / image.height}%`;
  box.style.width = `${(100 * (x1 - x0)) / image.width}%`;
  box.style.height = `${(100 * (y1 - y0)) / image.height}%`;
  box.title = `searched box ${crop.box_text}`;
}

function showPhoto(src) {
  drawCrop(null, null);
  $("photo").src = src;
  $("photo").hidden = false;
  $("drop-text").textContent = "Drop or tap for another photo";
}

function analyseFile(file) {
  if (!file) return;
  lastFile = file;
  showPhoto(URL.createObjectURL(file));
  const attributes = $("steer").checked ? "auto" : "off";
  const search = available.search
    ? () => upload(`/v1/search?k=${K}&attributes=${attributes}`, file, file.name) : null;
  analyse(file, file.name, search, "Similar catalogue items");
}

async function showItem(itemId, imageUrl, name) {
  lastFile = null;
  showPhoto(imageUrl);
  window.scrollTo({ top: 0, behavior: "smooth" });
  const search = () => call(`/v1/items/${encodeURIComponent(itemId)}/similar?k=${K}`);
  try {
    const blob = available.tag ? await (await fetch(imageUrl)).blob() : null;
    analyse(blob, `${itemId}.jpg`, search, `Items similar to ${name}`);
  } catch (error) {
    setStatus(error.message, true);
  }
}

function setUpDrop() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => analyseFile(event.target.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (event) => analyseFile(event.dataTransfer.files[0]));
  $("steer").addEventListener("change", () => analyseFile(lastFile));
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
  });
}

async function start() {
  setUpDrop();
  try {
    const info = await call("/v1/info");
    available = info.available;
    $("models").textContent = describeModels(info);
    $("steer-toggle").hidden = !(info.attributes && info.attributes.steering);
  } catch (error) {
    $("models").textContent = `cannot reach the service: ${error.message}`;
  }
}

start();
