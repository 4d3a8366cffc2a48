// The draw-a-digit page (a letter, a character or an item, as /api/info's "noun" says for the model's
// data set). The server does all the work (bin/predict's preprocessing and model): this script draws,
// sends the picture as a PNG and shows the answer. #result's data-state says where it is: empty,
// drawing, busy, done or error.
"use strict";

const HEIGHT = 280;  // canvas pixels; one digit is a square of this side, a row of digits three of them
const PEN = HEIGHT / 14;  // pen width: about an MNIST stroke in a digit of the canvas's height
const PAUSE_MS = 150;  // predict once the pen has been up this long

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const context = canvas.getContext("2d");
const result = $("result");
let drawing = false, timer = null, sequence = 0, lastBody = null, noun = "digit";

function numberMode() { return $("number-mode").checked; }

function clearCanvas() {
  canvas.width = numberMode() ? 3 * HEIGHT : HEIGHT;
  canvas.height = HEIGHT;
  $("pad").classList.toggle("number", numberMode());
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = context.fillStyle = "#000";
  context.lineWidth = PEN;
  context.lineCap = context.lineJoin = "round";
  lastBody = null;
  clearTimeout(timer);
  sequence++;  // an answer still on its way is for a picture that is gone
  show("empty", numberMode() ? `Write a row above, ${noun}s side by side.` :
    `Draw ${article(noun)} above, or upload or drop an image of one.`);
}

function point(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
}

canvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  clearTimeout(timer);
  drawing = true;
  const [x, y] = point(event);
  context.beginPath();
  context.arc(x, y, PEN / 2, 0, 2 * Math.PI);
  context.fill();
  context.beginPath();
  context.moveTo(x, y);
  result.dataset.state = "drawing";
});

canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const each of events.length ? events : [event]) {
    const [x, y] = point(each);
    context.lineTo(x, y);
  }
  context.stroke();
});

function penUp() {
  if (!drawing) return;
  drawing = false;
  clearTimeout(timer);
  timer = setTimeout(() => canvas.toBlob((blob) => predict(blob)), PAUSE_MS);
}
canvas.addEventListener("pointerup", penUp);
canvas.addEventListener("pointercancel", penUp);

function predictFile(file) {
  const form = new FormData();
  form.append("image", file, file.name);
  clearTimeout(timer);
  predict(form);
}

async function predict(body) {
  lastBody = body;
  const mine = ++sequence;
  const query = new URLSearchParams({preprocessed: 1, top_k: 10, min_confidence: $("threshold").value / 100});
  if (numberMode()) query.set("number", 1);
  result.dataset.state = "busy";
  let answer, ok = false;
  try {
    const headers = body instanceof Blob ? {"Content-Type": body.type || "image/png"} : {};
    const response = await fetch("api/predict?" + query, {method: "POST", body, headers});
    ok = response.ok;
    answer = await response.json();
  } catch (error) {
    answer = {error: "the server did not answer (" + error.message + ")"};
  }
  if (mine !== sequence) return;  // a newer picture was sent meanwhile
  if (!ok) return show("error", answer.error);
  numberMode() ? showNumber(answer) : showDigit(answer);
  show("done");
}

function show(state, message) {
  result.dataset.state = state;
  $("message").hidden = !message;
  $("message").textContent = message || "";
  $("answer").hidden = state !== "done";
}

function percent(p) { return (100 * p).toFixed(2) + "%"; }
function article(word) { return ("aeiou".includes(word[0]) ? "an " : "a ") + word; }

function showDigit(answer) {
  $("digit").textContent = answer.class;
  $("probability").textContent = percent(answer.probability);
  $("uncertain").hidden = !answer.uncertain;
  $("digits").replaceChildren();
  $("seen-figure").hidden = $("bars").hidden = false;
  $("seen").src = answer.preprocessed;
  // Every class in label order when all fit (10 or fewer), else the most likely ones first.
  const entries = [...answer.top_k];
  if (entries.length >= classes.length) entries.sort((a, b) => a.label - b.label);
  $("bars").replaceChildren(...entries.map((entry) => {
    const row = document.createElement("li");
    row.className = entry.label === answer.label ? "top" : "";
    row.dataset.label = entry.label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = (100 * entry.probability).toFixed(1) + "%";
    const track = document.createElement("span");
    track.className = "track";
    track.append(bar);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(entry.probability);
    row.append(entry.class, track, value);
    return row;
  }));
}

function showNumber(answer) {
  $("digit").textContent = answer.number;
  $("probability").textContent = "";
  $("uncertain").hidden = !answer.uncertain;
  $("seen-figure").hidden = $("bars").hidden = true;
  $("digits").replaceChildren(...answer.digits.map((digit) => {
    const figure = document.createElement("figure");
    figure.className = digit.uncertain ? "uncertain" : "";
    const image = document.createElement("img");
    image.src = digit.preprocessed;
    image.width = image.height = 56;
    image.alt = "what the model saw";
    const caption = document.createElement("figcaption");
    caption.textContent = digit.class + " " + percent(digit.probability);
    figure.append(image, caption);
    return figure;
  }));
}

$("clear").addEventListener("click", clearCanvas);
$("number-mode").addEventListener("change", clearCanvas);
$("threshold").addEventListener("input", () => {
  $("threshold-value").textContent = $("threshold").value + "%";
  if (lastBody) predict(lastBody);
});
for (const input of [$("file"), $("camera")]) {
  input.addEventListener("change", () => { if (input.files.length) predictFile(input.files[0]); input.value = ""; });
}
const pad = $("pad");
pad.addEventListener("dragover", (event) => { event.preventDefault(); pad.classList.add("dropping"); });
pad.addEventListener("dragleave", () => pad.classList.remove("dropping"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dropping");
  if (event.dataTransfer.files.length) predictFile(event.dataTransfer.files[0]);
});

let classes = [..."0123456789"];
fetch("api/info").then((response) => response.json()).then((info) => {
  const accuracy = info.test_accuracy == null ? "" : `, test accuracy ${(100 * info.test_accuracy).toFixed(2)}%`;
  $("footer").textContent = `model: ${info.run}, ${info.data} (step ${info.step}${accuracy})`;
  classes = info.classes;
  noun = info.noun;
  document.title = `mnist_jax: draw ${article(noun)}`;
  $("heading").textContent = `Draw ${article(noun)}`;
  $("row-label").textContent = `several ${noun}s in a row`;
  $("canvas").setAttribute("aria-label", `drawing area: draw ${article(noun)}`);
  $("bars").setAttribute("aria-label", `probability of each ${noun}`);
  if (result.dataset.state === "empty") clearCanvas();
}).catch(() => {});
clearCanvas();
