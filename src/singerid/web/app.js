// The page of `singerid serve`: identify, verify and enroll through the service's JSON routes (no library, no
// build step). Every text from the service or the user goes into the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "singerid-token";
const TOP_K = 5;
const LIST_LIMIT = 100;
const OPTION_LIMIT = 20;
const DEBOUNCE_MS = 200;

const $ = (id) => document.getElementById(id);
let clip = null; // the File (picked, dropped or recorded) that Identify and Verify send
let clipUrl = null;
let maxUploadBytes = null; // from /health
let recorder = null;

function show(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

const score = (value) => value.toFixed(3);
const megabytes = (bytes) =>
  bytes < 2 ** 20 ? `${Math.ceil(bytes / 1024)} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;

function debounce(action) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(action, DEBOUNCE_MS);
  };
}

// -- talking to the service ---------------------------------------------------------------------------------

async function request(method, path, body) {
  const token = $("token").value.trim();
  let response;
  try {
    response = await fetch(path, { method, body, headers: token ? { Authorization: `Bearer ${token}` } : {} });
  } catch (error) {
    throw new Error(`could not reach the service (${error.message})`);
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(answer.error || `the service answered ${response.status} ${response.statusText}`);
  }
  return answer;
}

function upload(path, file) {
  if (maxUploadBytes !== null && file.size > maxUploadBytes) {
    const limit = megabytes(maxUploadBytes);
    return Promise.reject(new Error(`${file.name} is ${megabytes(file.size)}; the service takes at most ${limit}`));
  }
  const form = new FormData();
  form.append("file", file, file.name);
  return request("POST", path, form);
}

async function refreshStatus() {
  try {
    const health = await request("GET", "/health");
    maxUploadBytes = health.max_upload_bytes;
    show($("status"), `${health.singers} singers enrolled; uploads up to ${megabytes(maxUploadBytes)}.`);
  } catch (error) {
    show($("status"), error.message, true);
  }
}

async function singers(text, limit) {
  return request("GET", `/singers?limit=${limit}&q=${encodeURIComponent(text)}`);
}

async function refreshSingers() {
  try {
    const answer = await singers($("singer-filter").value, LIST_LIMIT);
    $("singers").replaceChildren(...answer.singers.map((singer) => element("li", singer)));
    const shown = answer.matched > answer.singers.length ? `, the first ${answer.singers.length} shown` : "";
    const matched = answer.matched === answer.total ? `${answer.total}` : `${answer.matched} of ${answer.total}`;
    show($("singer-count"), `(${matched}${shown})`);
  } catch (error) {
    $("singers").replaceChildren();
    show($("singer-count"), error.message, true);
  }
}

async function refreshOptions() {
  try {
    const answer = await singers($("verify-singer").value, OPTION_LIMIT);
    const options = answer.singers.map((singer) => Object.assign(element("option"), { value: singer }));
    $("singer-options").replaceChildren(...options);
  } catch {
    $("singer-options").replaceChildren(); // Verify says what is wrong
  }
}

function element(tag, text = "", className = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

// -- the clip -----------------------------------------------------------------------------------------------

function setClip(file) {
  clip = file;
  if (clipUrl) URL.revokeObjectURL(clipUrl);
  clipUrl = URL.createObjectURL(file);
  $("player").src = clipUrl;
  $("player").hidden = false;
  show($("clip"), `${file.name} (${megabytes(file.size)})`);
  $("identify").disabled = false;
  $("verify").disabled = false;
  identify();
}

async function toggleRecording() {
  if (recorder) {
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
    const why = "it allows the microphone on secure pages and on 127.0.0.1 or localhost";
    show($("clip"), `This browser cannot record here: ${why}.`, true);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    show($("clip"), `No microphone: ${error.message}`, true);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", () => {
    stream.getTracks().forEach((track) => track.stop());
    const type = recorder.mimeType || "audio/webm";
    const extension = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    recorder = null;
    $("record").textContent = "Record from the microphone";
    setClip(new File(chunks, `recording.${extension}`, { type }));
  });
  recorder.start();
  $("record").textContent = "Stop recording";
  show($("clip"), "Recording… press Stop recording when done.");
}

// -- identify, verify, enroll -------------------------------------------------------------------------------

async function identify() {
  const message = $("identify-message");
  $("matches").hidden = true;
  $("matches").tBodies[0].replaceChildren();
  show($("verdict"), "");
  show($("threshold"), "");
  show(message, `Identifying ${clip.name}…`);
  try {
    const answer = await upload(`/identify?top_k=${TOP_K}`, clip);
    show(message, "");
    showMatches(answer);
  } catch (error) {
    show(message, error.message, true);
  }
}

function showMatches(answer) {
  const rows = answer.matches.map((match, index) => {
    const meter = Object.assign(document.createElement("meter"), { min: 0, max: 1, value: match.score });
    const bar = element("td");
    bar.append(meter);
    const row = element("tr");
    row.append(element("td", `${index + 1}`), element("td", match.singer_id, "singer"));
    row.append(element("td", score(match.score), "score"), bar);
    return row;
  });
  $("matches").tBodies[0].replaceChildren(...rows);
  $("matches").hidden = rows.length === 0;
  const best = answer.matches[0];
  const threshold = answer.threshold;
  let verdict;
  if (!best) {
    verdict = "Unknown singer: no singer is enrolled.";
  } else if (answer.unknown) {
    verdict = `Unknown singer: the best score, ${score(best.score)}, is below the threshold.`;
  } else if (threshold === null) {
    verdict = `Closest singer: ${best.singer_id} (without a threshold every voice gets the closest singer).`;
  } else {
    verdict = `Known singer: ${best.singer_id}, with a score at or above the threshold.`;
  }
  show($("verdict"), verdict);
  $("verdict").className = answer.unknown ? "verdict unknown" : "verdict known";
  const uncalibrated = "Threshold: none (the library is not calibrated).";
  show($("threshold"), threshold === null ? uncalibrated : `Threshold: ${score(threshold)}`);
}

async function verify() {
  const output = $("verification");
  const singer = $("verify-singer").value;
  if (!singer) {
    show(output, "Choose an enrolled singer first.", true);
    return;
  }
  show(output, `Verifying ${clip.name} against ${singer}…`);
  try {
    const answer = await upload(`/verify?singer_id=${encodeURIComponent(singer)}`, clip);
    const how = answer.accepted ? "Accepted" : "Rejected";
    const side = answer.accepted ? "at or above" : "below";
    const scores = `${answer.singer_id} scores ${score(answer.score)}`;
    show(output, `${how}: ${scores}, ${side} the threshold ${score(answer.threshold)}.`);
    output.className = `message ${answer.accepted ? "known" : "unknown"}`;
  } catch (error) {
    show(output, error.message, true);
  }
}

async function enroll() {
  const output = $("enrollment");
  const singer = $("enroll-id").value;
  const files = [...$("enroll-files").files];
  if (!singer.trim() || !files.length) {
    show(output, "Give the singer an id and choose one or more audio files.", true);
    return;
  }
  $("enroll").disabled = true;
  let done = 0;
  try {
    for (const file of files) {
      show(output, `Enrolling ${singer}: ${file.name} (${done + 1} of ${files.length})…`);
      const replace = done === 0 && $("enroll-replace").checked ? "&replace=1" : "";
      try {
        await upload(`/enroll?singer_id=${encodeURIComponent(singer)}${replace}`, file);
      } catch (error) {
        throw new Error(`${file.name}: ${error.message} (${done} of ${files.length} files enrolled)`);
      }
      done += 1;
    }
    show(output, `Enrolled ${singer} from ${files.length} file${files.length > 1 ? "s" : ""}.`);
  } catch (error) {
    show(output, error.message, true);
  } finally {
    $("enroll").disabled = false;
    refreshStatus();
    refreshSingers();
  }
}

// -- wiring -------------------------------------------------------------------------------------------------

function start() {
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    refreshSingers();
  });
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) setClip(event.target.files[0]);
    event.target.value = ""; // picking the same file again is a new pick
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) setClip(event.dataTransfer.files[0]);
  });
  $("record").addEventListener("click", toggleRecording);
  $("identify").addEventListener("click", identify);
  $("verify").addEventListener("click", verify);
  $("verify-singer").addEventListener("input", debounce(refreshOptions));
  $("verify-singer").addEventListener("focus", refreshOptions);
  $("enroll").addEventListener("click", enroll);
  $("singer-filter").addEventListener("input", debounce(refreshSingers));
  refreshStatus();
  refreshSingers();
}

start();
