// The demo page of `asr-lightning serve`: upload, record or stream, then read along.
"use strict";

/** Words below this confidence are styled as uncertain. */
const LOW_CONFIDENCE = 0.5;
/** The rate the live mode sends to /stream, in Hz. */
const STREAM_RATE = 16000;

const $ = (id) => document.getElementById(id);
const state = { words: [], spans: [], audioUrl: null, recorder: null, live: null };

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function percent(value) {
  return value === null || value === undefined ? "n/a" : `${Math.round(value * 100)}%`;
}

/** Shows a transcript ({text, words, confidence}) with one span per word. */
function showTranscript(answer) {
  const box = $("transcript");
  box.replaceChildren();
  state.words = answer.words || [];
  state.spans = state.words.map((word) => {
    const span = document.createElement("span");
    span.className = "word";
    if (word.confidence !== null && word.confidence < LOW_CONFIDENCE) span.classList.add("low");
    span.textContent = word.word;
    span.title = `${percent(word.confidence)} confident, ${word.start.toFixed(2)}-${word.end.toFixed(2)} s`;
    span.addEventListener("click", () => {
      $("player").currentTime = word.start;
      highlight();
    });
    box.append(span, " ");
    return span;
  });
  if (!state.words.length) box.textContent = answer.text || "(no speech)";
  box.dataset.text = answer.text;
  $("confidence").textContent = `Confidence: ${percent(answer.confidence)}`;
}

/** Highlights the word being played. */
function highlight() {
  const time = $("player").currentTime;
  state.spans.forEach((span, index) => {
    const word = state.words[index];
    span.classList.toggle("current", time >= word.start && time < word.end);
  });
}

function followPlayback() {
  const player = $("player");
  const frame = () => {
    highlight();
    if (!player.paused && !player.ended) requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

function play(blob) {
  if (state.audioUrl) URL.revokeObjectURL(state.audioUrl);
  state.audioUrl = URL.createObjectURL(blob);
  $("player").src = state.audioUrl;
}

/** POSTs a clip to /invocations and shows its transcript. */
async function transcribe(blob, type) {
  play(blob);
  $("partial").textContent = "";
  setStatus("Transcribing…");
  try {
    const response = await fetch("/invocations?timestamps=true", {
      method: "POST",
      headers: { "Content-Type": type || "application/octet-stream" },
      body: blob,
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    showTranscript(answer);
    setStatus("Done.");
  } catch (error) {
    setStatus(`Could not transcribe: ${error.message}`, true);
  }
}

// -- upload -------------------------------------------------------------------------------------

function onFile(event) {
  const file = event.target.files[0];
  if (file) transcribe(file, file.type);
}

// -- record (MediaRecorder, posted when stopped) ----------------------------------------------

async function toggleRecord() {
  const button = $("record");
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    setStatus(`No microphone: ${error.message}`, true);
    return;
  }
  const types = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"];
  const mimeType = types.find((type) => MediaRecorder.isTypeSupported(type));
  const recorder = new MediaRecorder(media, mimeType ? { mimeType } : undefined);
  const chunks = [];
  recorder.ondataavailable = (event) => event.data.size && chunks.push(event.data);
  recorder.onstop = () => {
    media.getTracks().forEach((track) => track.stop());
    state.recorder = null;
    button.textContent = "Record";
    button.classList.remove("active");
    $("live").disabled = false;
    const type = (recorder.mimeType || "audio/webm").split(";")[0];
    transcribe(new Blob(chunks, { type }), type);
  };
  recorder.start(250);
  state.recorder = recorder;
  button.textContent = "Stop recording";
  button.classList.add("active");
  $("live").disabled = true;
  setStatus("Recording… press Stop to transcribe.");
}

// -- live (AudioWorklet or ScriptProcessor -> 16 kHz s16le -> /stream) -------------------------

/** Averages the input into output samples at a lower rate (a box filter against aliasing). */
class Downsampler {
  constructor(inRate, outRate) {
    this.ratio = inRate / outRate;
    this.pending = new Float32Array(0);
    this.position = 0; // where the next output sample starts in `pending`, fractional
  }

  /** 16-bit little-endian PCM of the samples complete so far. */
  push(input) {
    const data = new Float32Array(this.pending.length + input.length);
    data.set(this.pending);
    data.set(input, this.pending.length);
    const out = [];
    let start = this.position;
    while (start + this.ratio <= data.length) {
      const end = start + this.ratio;
      let sum = 0;
      let count = 0;
      for (let i = Math.floor(start); i < Math.floor(end); i += 1) {
        sum += data[i];
        count += 1;
      }
      out.push(count ? sum / count : data[Math.floor(start)]);
      start = end;
    }
    const kept = Math.floor(start);
    this.pending = data.slice(kept);
    this.position = start - kept;
    const pcm = new DataView(new ArrayBuffer(out.length * 2));
    out.forEach((sample, i) => {
      const clipped = Math.max(-1, Math.min(1, sample));
      pcm.setInt16(i * 2, Math.round(clipped * 32767), true);
    });
    return pcm.buffer;
  }
}

/** A 16-bit mono WAV of PCM chunks (to play the streamed audio back). */
function wavBlob(chunks, rate) {
  const size = chunks.reduce((total, chunk) => total + chunk.byteLength, 0);
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, value) =>
    [...value].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  header.setUint32(4, 36 + size, true);
  text(8, "WAVE");
  text(12, "fmt ");
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, rate, true);
  header.setUint32(28, rate * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  text(36, "data");
  header.setUint32(40, size, true);
  return new Blob([header.buffer, ...chunks], { type: "audio/wav" });
}

function onStreamMessage(live, event) {
  const message = JSON.parse(event.data);
  if ("partial" in message) {
    live.partials += 1;
    $("partial").textContent = message.partial;
    $("partial").dataset.count = String(live.partials);
  } else if ("final" in message) {
    live.finished = true;
    $("partial").textContent = "";
    play(wavBlob(live.sent, STREAM_RATE));
    showTranscript({ text: message.final, words: message.words, confidence: message.confidence });
    setStatus("Done.");
  } else if ("error" in message) {
    live.finished = true;
    setStatus(`The stream failed: ${message.error}`, true);
  }
}

async function startLive() {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const context = new AudioContext();
  await context.resume();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/stream?sample_rate=${STREAM_RATE}`);
  socket.binaryType = "arraybuffer";
  const live = { media, context, socket, sent: [], partials: 0, ended: false, finished: false };
  state.live = live;
  socket.onmessage = (event) => onStreamMessage(live, event);
  socket.onclose = (event) => {
    if (!live.finished) setStatus(`The stream closed (code ${event.code}).`, event.code !== 1000);
    stopCapture(live);
    resetLiveButton();
  };
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = () => reject(new Error("cannot open the WebSocket /stream"));
  });
  const downsampler = new Downsampler(context.sampleRate, STREAM_RATE);
  const onSamples = (samples) => {
    if (live.ended || socket.readyState !== WebSocket.OPEN) return;
    const pcm = downsampler.push(samples);
    if (pcm.byteLength) {
      socket.send(pcm);
      live.sent.push(pcm);
    }
  };
  const source = context.createMediaStreamSource(media);
  const silent = context.createGain();
  silent.gain.value = 0; // the capture node must reach the destination to be run, unheard
  silent.connect(context.destination);
  if (context.audioWorklet) {
    await context.audioWorklet.addModule("/static/pcm-worklet.js");
    live.node = new AudioWorkletNode(context, "pcm-capture");
    live.node.port.onmessage = (event) => onSamples(event.data);
  } else {
    live.node = context.createScriptProcessor(4096, 1, 1);
    live.node.onaudioprocess = (event) => onSamples(new Float32Array(event.inputBuffer.getChannelData(0)));
  }
  source.connect(live.node);
  live.node.connect(silent);
  setStatus("Listening… press Stop for the final transcript.");
}

function stopCapture(live) {
  if (live.ended) return;
  live.ended = true;
  if (live.node) live.node.disconnect();
  live.media.getTracks().forEach((track) => track.stop());
  live.context.close();
}

function stopLive() {
  const live = state.live;
  stopCapture(live);
  if (live.socket.readyState === WebSocket.OPEN) {
    live.socket.send(JSON.stringify({ event: "end" }));
    setStatus("Finishing…");
  }
  $("live").disabled = true;
}

function resetLiveButton() {
  const button = $("live");
  state.live = null;
  button.textContent = "Live";
  button.classList.remove("active");
  button.disabled = false;
  $("record").disabled = false;
}

async function toggleLive() {
  const button = $("live");
  if (state.live) {
    stopLive();
    return;
  }
  button.textContent = "Stop";
  button.classList.add("active");
  $("record").disabled = true;
  $("partial").textContent = "";
  $("transcript").replaceChildren();
  try {
    await startLive();
  } catch (error) {
    setStatus(`Live mode failed: ${error.message}`, true);
    if (state.live) stopCapture(state.live);
    resetLiveButton();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("file").addEventListener("change", onFile);
  $("record").addEventListener("click", toggleRecord);
  $("live").addEventListener("click", toggleLive);
  const player = $("player");
  player.addEventListener("timeupdate", highlight);
  player.addEventListener("seeked", highlight);
  player.addEventListener("play", followPlayback);
  document.body.dataset.ready = "true";
});
