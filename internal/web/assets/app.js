// mailroomd status page: renders the status pushed by the daemon over
// Server-Sent Events. No external code; CSP allows only this file.
"use strict";

const T = {
  de: {
    logout: "Abmelden", link: "Cloud", queue: "Warteschlange", lastHour: "Letzte Stunde", alerts: "Warnungen",
    devices: "Geräte", device: "Gerät", state: "Zustand", reading: "Letzter Wert", manual: "Manuelle Eingabe",
    station: "Station", tracking: "Sendungsnummer", recipient: "Empfänger", weight: "Gewicht", record: "Erfassen",
    chart: "Letzte 24 Stunden", recent: "Letzte Sendungen", time: "Zeit", carrier: "Dienst", delivery: "An die Cloud",
    connected: "Verbunden", disconnected: "Getrennt", since: "seit", pending: "wartend", oldest: "älteste",
    sent: "übertragen", waiting: "gespeichert, wird übertragen", waitingHint: "Sicher auf der Box gespeichert. Es wird der Reihe nach an die Cloud übertragen, nach allem, was vorher gespeichert wurde.", none: "Keine Warnungen", reprint: "Nachdrucken", test: "Testen",
    noticeLost: "Verbindung zum Gerät unterbrochen – die Anzeige ist nicht aktuell. Neuer Versuch läuft …",
    recorded: "Erfasst als Nr.", notRecorded: "Nicht erfasst:", scans: "Scans pro Stunde", pendingLine: "wartend",
    connected_state: "verbunden", disconnected_state: "getrennt", error_state: "Fehler", reprinted: "Etikett wird gedruckt",
    manualMark: "manuell", lastError: "Fehler", events: "Ereignisse",
    err_tracking_required: "Bitte eine Sendungsnummer (1 bis 128 Zeichen) eingeben.",
    err_recipient_too_long: "Der Empfänger ist länger als 128 Zeichen.",
    err_unknown_station: "Diese Station gibt es nicht (mehr). Bitte die Seite neu laden.",
    err_bad_weight: "Das Gewicht muss eine positive Zahl in g, kg, lb oder oz sein.",
    err_refused: "Der Puffer nimmt gerade nichts an – bitte die Warnungen beachten.",
    err_unknown_person: "Diese Person ist nicht (mehr) im Verzeichnis.", needsRecipient: "Empfänger fehlt",
    alertUplink: "Keine Verbindung zur Cloud – Scans werden gespeichert und später gesendet",
    alertUnsubscribed: "Fernwartung nicht erreichbar – Scans werden weiter gesendet",
    alertDeviceGone: "{0} ist nicht verbunden", alertDeviceSilent: "{0} antwortet nicht",
    alertPrinter: "Drucker {0} meldet ein Problem", alertStation: "Station {0}: Scans bleiben liegen",
    alertRefusing: "Neue Scans werden abgelehnt", alertRecovered: "Pufferdatenbank war beschädigt und wurde ersetzt",
    alertPending: "Viele Ereignisse warten auf Übertragung", alertOldest: "Ereignisse warten schon lange auf Übertragung",
    alertDisk: "Wenig freier Speicherplatz", alertCert: "Client-Zertifikat läuft bald ab",
    alertRejected: "Ferngesteuerte Anweisung abgelehnt", alertLockout: "Anmeldung nach Fehlversuchen gesperrt",
    alertProbeFailed: "Testnachricht über die Cloud kam nicht zurück", alertProbeSlow: "Cloud antwortet langsam",
    alertClockUnsynced: "Systemuhr nicht synchronisiert", alertClockJumped: "Systemuhr ist gesprungen",
    photo: "Foto", photoKind: "Art", photo_label: "Etikett", photo_damage: "Schaden", photo_proof: "Übergabe",
    photoTake: "Aufnehmen", photoCancel: "Abbrechen", photoSaved: "Foto gespeichert", photoNoCamera: "Keine Kamera verfügbar",
    photoOffline: "Nicht gesendet: keine Verbindung",
    ph_bad_kind: "Unbekannte Art von Foto.", ph_photo_required: "Kein Bild aufgenommen – bitte noch einmal.",
    ph_bad_type: "Das Bild ist weder JPEG noch PNG.", ph_too_large: "Das Foto ist zu groß.",
    ph_unknown_parcel: "Unbekannte Sendung – bitte zuerst annehmen.",
    ph_photos_full: "Der Fotospeicher ist voll: neue Fotos werden abgelehnt, bis hochgeladene gelöscht sind.",
    ph_disk_full: "Der Datenträger der Box ist voll: das Foto wurde nicht gespeichert. Alles bisher Erfasste ist sicher.",
    ph_refused: "Das Gerät nimmt gerade keine Fotos an – bitte die Warnungen beachten.",
    ph_parcel_closed: "Die Sendung ist bereits abgeschlossen: kein Foto mehr möglich.",
  },
  en: {
    logout: "Sign out", link: "Cloud", queue: "Queue", lastHour: "Last hour", alerts: "Alerts",
    devices: "Devices", device: "Device", state: "State", reading: "Last reading", manual: "Manual entry",
    station: "Station", tracking: "Tracking number", recipient: "Recipient", weight: "Weight", record: "Record",
    chart: "Last 24 hours", recent: "Recent parcels", time: "Time", carrier: "Carrier", delivery: "To the cloud",
    connected: "Connected", disconnected: "Disconnected", since: "since", pending: "pending", oldest: "oldest",
    sent: "sent", waiting: "recorded, being sent", waitingHint: "Safely recorded on the box. It is sent to the cloud in order, after everything recorded before it.", none: "No alerts", reprint: "Reprint", test: "Test",
    noticeLost: "Connection to the box lost – the page is not up to date. Reconnecting …",
    recorded: "Recorded as no.", notRecorded: "Not recorded:", scans: "scans per hour", pendingLine: "pending",
    connected_state: "connected", disconnected_state: "disconnected", error_state: "error", reprinted: "Label is printing",
    manualMark: "manual", lastError: "error", events: "events",
    err_tracking_required: "Enter a tracking number (1 to 128 characters).",
    err_recipient_too_long: "The recipient is longer than 128 characters.",
    err_unknown_station: "This station does not exist (any more). Please reload the page.",
    err_bad_weight: "The weight must be a positive number in g, kg, lb or oz.",
    err_refused: "The buffer is not accepting anything right now – see the alerts.",
    err_unknown_person: "This person is not in the directory (any more).", needsRecipient: "Needs recipient",
    alertUplink: "No connection to the cloud – scans are kept and sent later",
    alertUnsubscribed: "Remote management cannot reach the box – scans are still sent",
    alertDeviceGone: "{0} is not connected", alertDeviceSilent: "{0} does not answer",
    alertPrinter: "Printer {0} reports a problem", alertStation: "Station {0}: scans are not being processed",
    alertRefusing: "New scans are refused", alertRecovered: "The buffer database was damaged and has been replaced",
    alertPending: "Many events are waiting to be sent", alertOldest: "Events have been waiting a long time",
    alertDisk: "Little free disk space", alertCert: "Client certificate expires soon",
    alertRejected: "Remote instruction refused", alertLockout: "Sign-in locked after failed attempts",
    alertProbeFailed: "Test message through the cloud did not come back", alertProbeSlow: "The cloud answers slowly",
    alertClockUnsynced: "System clock not synchronised", alertClockJumped: "System clock jumped",
    photo: "Photo", photoKind: "Kind", photo_label: "Label", photo_damage: "Damage", photo_proof: "Hand-over",
    photoTake: "Take", photoCancel: "Cancel", photoSaved: "Photo saved", photoNoCamera: "No camera available",
    photoOffline: "Not sent: no connection",
    ph_bad_kind: "Unknown kind of photo.", ph_photo_required: "No picture taken – try again.",
    ph_bad_type: "The picture is neither JPEG nor PNG.", ph_too_large: "The photo is too large.",
    ph_unknown_parcel: "Unknown parcel – receive it first.",
    ph_photos_full: "The photo store is full: new photos are refused until uploaded ones are pruned.",
    ph_disk_full: "The box's disk is full: the photo was not kept. Everything recorded before is safe.",
    ph_refused: "The box does not take photos right now – see the alerts.",
    ph_parcel_closed: "The parcel is closed already: no more photos.",
  },
};

let lang = document.documentElement.lang === "de" ? "de" : "en";
let session = null;
let last = null;

const $ = (id) => document.getElementById(id);
const t = (k) => (T[lang][k] || k);

// A headline in the clerk's language for each alert the box raises, found
// by the alert's key; the box's own text (English, with the details)
// follows it. An alert with no headline here shows its text alone.
const ALERTS = [
  [/^uplink\.disconnected$/, "alertUplink"],
  [/^uplink\.unsubscribed$/, "alertUnsubscribed"],
  [/^device\.(.+)\.disconnected$/, "alertDeviceGone"],
  [/^device\.(.+)\.not_answering$/, "alertDeviceSilent"],
  [/^device\.(.+)\.printer$/, "alertPrinter"],
  [/^station\.(.+)\.stuck$/, "alertStation"],
  [/^store\.refusing$/, "alertRefusing"],
  [/^store\.recovered$/, "alertRecovered"],
  [/^queue\.pending_high$/, "alertPending"],
  [/^queue\.oldest_pending$/, "alertOldest"],
  [/^disk\.free_low$/, "alertDisk"],
  [/^security\.cert_expiring$/, "alertCert"],
  [/^security\.rejected_instruction$/, "alertRejected"],
  [/^security\.login_lockout$/, "alertLockout"],
  [/^probe\.failed$/, "alertProbeFailed"],
  [/^probe\.slow$/, "alertProbeSlow"],
  [/^clock\.unsynchronized$/, "alertClockUnsynced"],
  [/^clock\.jumped$/, "alertClockJumped"],
];

function alertItem(a) {
  for (const [re, k] of ALERTS) {
    const m = re.exec(a.key);
    if (m) {
      const head = t(k).replace("{0}", m[1] || "");
      return el("li", { class: a.severity }, el("strong", {}, head), el("span", { class: "detail" }, a.message));
    }
  }
  return el("li", { class: a.severity }, a.message);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

function fmtTime(iso) {
  const d = new Date(iso);
  return d.toLocaleString(lang === "de" ? "de-DE" : "en-GB", { day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function fmtAge(s) {
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function setLang(l) {
  lang = l;
  document.documentElement.lang = l;
  document.cookie = "lang=" + l + "; path=/; samesite=strict; max-age=31536000";
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
  for (const b of document.querySelectorAll("button.lang")) {
    b.classList.toggle("active", b.dataset.lang === l);
    b.setAttribute("aria-pressed", String(b.dataset.lang === l));
  }
  showResult();
  photoShow();
  if (last) render(last);
  if (window.onLang) window.onLang();
}

// The answer to the clerk's last action, kept as a message key and its
// detail so that a language switch translates it too.
// An error the box names by code is said in the clerk's language; others
// show the box's own text.
let result = null;
function showResult(key, detail, ok, code) {
  if (key !== undefined) result = { key, detail: detail == null ? "" : String(detail), ok, code };
  if (!result) return;
  const out = $("manual-result");
  const said = result.code && T[lang]["err_" + result.code] ? t("err_" + result.code) : result.detail;
  out.textContent = [result.key ? t(result.key) : "", said].filter(Boolean).join(" ");
  out.className = result.ok ? "ok" : "bad";
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf },
    body: JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({ error: r.statusText }));
  if (r.status === 401) location.href = "/login";
  if (!r.ok) {
    const e = new Error(data.error || r.statusText);
    e.code = data.code;
    throw e;
  }
  return data;
}

function render(s) {
  last = s;
  const link = s.link;
  $("link-state").textContent = link.connected ? t("connected") : t("disconnected");
  $("link-state").className = "big " + (link.connected ? "ok" : "bad");
  $("link-detail").textContent = link.connected ? (link.broker || "") :
    t("since") + " " + fmtTime(link.since) + (link.last_error ? " · " + t("lastError") + ": " + link.last_error : "");
  $("pending").textContent = s.queue.pending;
  $("pending").className = "big " + (s.queue.pending > 100 ? "warn" : "ok");
  $("queue-detail").textContent = s.queue.pending > 0 ? t("oldest") + ": " + fmtAge(s.queue.oldest_age_s) : "";
  $("last-hour").textContent = s.queue.last_hour;

  const alerts = $("alerts");
  alerts.replaceChildren(...(s.alerts.length ? s.alerts.map(alertItem) : [el("li", { class: "none" }, t("none"))]));

  const devs = $("devices").tBodies[0];
  devs.replaceChildren(...s.devices.map((d) => {
    const cls = d.state === "connected" ? "ok" : d.state === "error" ? "warn" : "bad";
    const test = session && session.role === "admin" && d.kind === "printer" ?
      el("button", { type: "button", class: "device-test", "data-device": d.name }, t("test")) : "";
    return el("tr", { "data-device": d.name },
      el("td", {}, d.name + " (" + d.kind + ")"),
      el("td", { class: cls }, t(d.state + "_state") + (d.reason ? " – " + d.reason : "")),
      el("td", {}, d.last_reading || ""), el("td", {}, test));
  }));

  const sel = $("manual-station");
  if (sel.options.length !== s.stations.length) {
    sel.replaceChildren(...s.stations.map((st) => el("option", { value: st.name }, st.name)));
  }
  $("manual-section").hidden = s.stations.length === 0;

  const printers = new Set(s.stations.filter((st) => st.has_printer).map((st) => st.name));
  const rows = $("events").tBodies[0];
  rows.replaceChildren(...s.events.map((e) => el("tr", { "data-id": e.id, "data-seq": e.seq },
    el("td", {}, fmtTime(e.time)),
    el("td", {}, e.station || ""),
    el("td", {}, (e.carrier || "–") + (e.manual ? " (" + t("manualMark") + ")" : "")),
    el("td", { class: "tracking" }, e.tracking + (e.recipient ? " → " + e.recipient : ""),
      e.match === "none" ? el("span", { class: "needs-mark" }, t("needsRecipient")) : ""),
    el("td", {}, e.weight || ""),
    // Not sent yet is no problem: the event is committed on the box and
    // goes in order, behind whatever was recorded before it.
    e.sent ? el("td", { class: "ok" }, t("sent")) : el("td", { class: "recorded", title: t("waitingHint") }, t("waiting")),
    el("td", {}, e.type === "parcel.received" && printers.has(e.station) ?
      el("button", { type: "button", class: "reprint", "data-station": e.station, "data-id": e.id }, t("reprint")) : "",
    e.type === "parcel.received" ? photoButton(e.id, "label", e.tracking) : ""))));
  drawChart(s.chart);
  if (window.onStatus) window.onStatus(s);
}

function drawChart(c) {
  const ns = "http://www.w3.org/2000/svg";
  const W = Math.max(320, $("chart").clientWidth || 720), H = 180, P = 24;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", t("chart"));
  const maxScans = Math.max(1, ...c.scans), maxPending = Math.max(1, ...c.pending);
  const bw = (W - 2 * P) / c.scans.length;
  const mk = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; };
  c.scans.forEach((n, i) => {
    const h = (H - 2 * P) * n / maxScans;
    const r = mk("rect", { class: "bar", x: P + i * bw + 1, y: H - P - h, width: bw - 2, height: h });
    r.append(mk("title", {}));
    r.firstChild.textContent = n + " " + t("scans");
    svg.append(r);
    if (i % 3 === 0) {
      const lbl = mk("text", { x: P + i * bw, y: H - 6 });
      lbl.textContent = new Date(c.hours[i]).getHours() + ":00";
      svg.append(lbl);
    }
  });
  const pts = c.pending.map((n, i) => `${P + (i + 0.5) * bw},${H - P - (H - 2 * P) * n / maxPending}`).join(" ");
  svg.append(mk("polyline", { class: "line", points: pts }));
  const legend = mk("text", { x: P, y: 14 });
  legend.textContent = `▮ ${t("scans")} (max ${maxScans})   — ${t("pendingLine")} (max ${maxPending})`;
  svg.append(legend);
  $("chart").replaceChildren(svg);
}

// findPeople asks the directory for the people a name or badge may mean,
// best first; none when the box has no directory (404) or finds no one.
async function findPeople(q) {
  const r = await fetch("/api/people?q=" + encodeURIComponent(q), { credentials: "same-origin" }).catch(() => null);
  if (!r || !r.ok) return [];
  const data = await r.json().catch(() => ({}));
  return data.people || [];
}

// typeahead offers the people of the directory in list, under input, as the
// clerk types (2 characters or more, 200 ms after the last key): chosen by
// click, tap or arrow keys and Enter; Escape closes. pick(person) is called
// with the person chosen, edit() whenever the clerk types. It returns
// search(), to search for what the input holds now, and close().
function typeahead(input, list, pick, edit) {
  let timer = 0, seq = 0, found = [], at = -1;
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", list.id);
  input.setAttribute("aria-expanded", "false");
  list.setAttribute("role", "listbox");
  list.hidden = true;
  const show = () => {
    list.replaceChildren(...found.map((p, i) => el("li", { id: list.id + "-" + i, role: "option", "data-person": p.id,
      class: i === at ? "active" : "", "aria-selected": String(i === at) },
    el("span", { class: "name" }, p.name), p.location ? el("span", { class: "where" }, p.location) : "")));
    list.hidden = found.length === 0;
    input.setAttribute("aria-expanded", String(found.length > 0));
    if (at >= 0) { input.setAttribute("aria-activedescendant", list.id + "-" + at); list.children[at].scrollIntoView({ block: "nearest" }); }
    else input.removeAttribute("aria-activedescendant");
  };
  const close = () => { clearTimeout(timer); seq++; found = []; at = -1; show(); };
  const choose = (p) => { close(); input.value = p.name; pick(p); };
  const search = async () => {
    clearTimeout(timer);
    const q = input.value.trim();
    if (q.length < 2) { close(); return; }
    const n = ++seq;
    const ps = await findPeople(q);
    if (n !== seq) return; // the clerk typed on, or chose, meanwhile
    found = ps.slice(0, 10); at = -1; show();
  };
  input.addEventListener("input", () => {
    if (edit) edit();
    clearTimeout(timer);
    timer = setTimeout(search, 200);
  });
  input.addEventListener("keydown", (e) => {
    if (!found.length) return;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      at = e.key === "ArrowDown" ? (at + 1) % found.length : (at <= 0 ? found.length : at) - 1;
      show();
    } else if (e.key === "Enter" && at >= 0) {
      e.preventDefault();
      choose(found[at]);
    } else if (e.key === "Escape") {
      e.preventDefault();
      close();
    }
  });
  input.addEventListener("blur", () => setTimeout(() => { if (document.activeElement !== input) close(); }, 150));
  list.addEventListener("mousedown", (e) => e.preventDefault()); // the input keeps the focus
  list.addEventListener("click", (e) => {
    const li = e.target.closest("li[data-person]");
    const p = li && found.find((x) => x.id === li.dataset.person);
    if (p) choose(p);
  });
  return { search, close };
}

// ---- photos ------------------------------------------------------------------
// A photo of a parcel, taken with the device's camera in one dialog and sent
// at once: photos are never queued, a failed upload is said and the clerk
// may try again. photo is the dialog's state while it is open.
let photo = null; // {parcel, stream, timer, busy}
let photoSaid = null; // the dialog's last message, kept as a key so that a language switch translates it

// photoButton offers a photo of a parcel when the box takes photos; kind is
// the kind the dialog starts with, what names the parcel.
function photoButton(id, kind, what) {
  if (!session || !session.photo_long_edge) return "";
  return el("button", { type: "button", class: "photo", "data-parcel": id, "data-kind": kind, "data-what": what || id,
    "aria-label": t("photo") + " – " + (what || id) }, el("span", { class: "txt" }, t("photo")));
}

// photoSay shows a message in the dialog: the text of key (else fallback),
// then extra.
function photoSay(key, extra, ok, fallback) {
  photoSaid = { key, extra: extra || "", ok, fallback: fallback || "" };
  photoShow();
}
function photoShow() {
  const m = $("photo-msg");
  if (!m || !photoSaid) return;
  const s = photoSaid;
  m.textContent = [s.key && T[lang][s.key] ? t(s.key) : s.fallback, s.extra].filter(Boolean).join(" ");
  m.className = s.ok ? "ok" : "bad";
}

async function photoOpen(parcel, kind, what) {
  const d = $("photo-dialog");
  if (d.open) return;
  const mine = photo = { parcel, stream: null, timer: 0, busy: false };
  delete d.dataset.sha256;
  $("photo-kind").value = kind;
  $("photo-for").textContent = what;
  $("photo-take").disabled = true;
  photoSaid = null; $("photo-msg").textContent = "";
  d.showModal();
  try {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { // e.g. not a secure context
      const e = new Error("no camera API"); e.name = window.isSecureContext ? "NotSupportedError" : "SecurityError"; throw e;
    }
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    if (photo !== mine) { for (const tr of stream.getTracks()) tr.stop(); return; } // closed meanwhile
    mine.stream = stream;
    const v = $("photo-video");
    v.srcObject = stream;
    await v.play().catch(() => {});
    if (photo === mine) $("photo-take").disabled = false;
  } catch (e) {
    if (photo === mine) photoSay("photoNoCamera", "(" + (e.name || e) + ")", false);
  }
}

// photoClosed stops the camera whenever the dialog closes: cancel, Escape
// or a photo saved.
function photoClosed() {
  if (!photo) return;
  clearTimeout(photo.timer);
  if (photo.stream) for (const tr of photo.stream.getTracks()) tr.stop();
  $("photo-video").srcObject = null;
  photo = null;
}

// photoTake sends the frame shown now as a JPEG whose long edge is at most
// photo_long_edge, smaller in bytes than photo_max_bytes.
async function photoTake() {
  const p = photo, v = $("photo-video");
  if (!p || !p.stream || p.busy || !v.videoWidth) return;
  p.busy = true;
  $("photo-take").disabled = true;
  try {
    const k = Math.min(1, session.photo_long_edge / Math.max(v.videoWidth, v.videoHeight));
    const c = document.createElement("canvas");
    c.width = Math.round(v.videoWidth * k); c.height = Math.round(v.videoHeight * k);
    c.getContext("2d").drawImage(v, 0, 0, c.width, c.height);
    const jpeg = (q) => new Promise((done) => c.toBlob(done, "image/jpeg", q));
    const max = session.photo_max_bytes || Infinity;
    let blob = await jpeg(0.85);
    if (blob && blob.size > max) blob = await jpeg(0.6);
    if (!blob) { photoSay("ph_photo_required", "", false); return; }
    if (blob.size > max) { photoSay("ph_too_large", "", false); return; }
    let r;
    try {
      r = await fetch("/api/parcels/" + encodeURIComponent(p.parcel) + "/photos?kind=" + encodeURIComponent($("photo-kind").value), {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "image/jpeg", "X-CSRF-Token": session.csrf }, body: blob,
      });
    } catch (e) {
      if (photo === p) photoSay("photoOffline", "", false);
      return;
    }
    if (r.status === 401) { location.href = "/login"; return; }
    const data = await r.json().catch(() => ({ error: r.statusText }));
    if (photo !== p) return; // closed meanwhile
    if (!r.ok) { photoSay("ph_" + data.code, "", false, data.error || r.statusText); return; }
    $("photo-dialog").dataset.sha256 = data.sha256;
    photoSay("photoSaved", String(data.sha256).slice(0, 12), true);
    p.timer = setTimeout(() => $("photo-dialog").close(), 1500);
  } finally {
    p.busy = false;
    if (photo === p && !p.timer) $("photo-take").disabled = false;
  }
}

function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("status", (m) => {
    $("notice").hidden = true;
    render(JSON.parse(m.data));
  });
  es.onopen = () => { $("notice").hidden = true; };
  es.onerror = async () => {
    $("notice").textContent = t("noticeLost");
    $("notice").hidden = false;
    if (es.readyState === EventSource.CLOSED) {
      // The server refused the stream (e.g. the session expired): check the
      // session, then open a new stream.
      try {
        const r = await fetch("/api/session", { credentials: "same-origin" });
        if (r.status === 401) { location.href = "/login"; return; }
      } catch (e) { /* the box is unreachable; try again */ }
      setTimeout(connect, 2000);
    }
  };
}

document.addEventListener("DOMContentLoaded", async () => {
  for (const b of document.querySelectorAll("button.lang")) b.addEventListener("click", () => setLang(b.dataset.lang));
  setLang(lang);
  const r = await fetch("/api/session", { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; return; }
  session = await r.json();
  $("who").textContent = session.user + " (" + session.role + ")";
  $("logout").addEventListener("click", async () => {
    await post("/logout", {}).catch(() => {});
    if (window.onLogout) window.onLogout();
    location.href = "/login";
  });
  // The person of the directory chosen as the recipient, by id: the entry
  // then names them by id alone. Typing again forgets the choice.
  let manualPerson = "";
  const manualTa = typeahead($("manual-recipient"), $("manual-suggest"), (p) => { manualPerson = p.id; }, () => { manualPerson = ""; });
  $("manual").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    manualTa.close();
    try {
      const w = parseFloat($("manual-weight").value);
      const body = {
        station: $("manual-station").value, tracking: $("manual-tracking").value,
        recipient: $("manual-recipient").value, weight: isNaN(w) ? 0 : w, unit: $("manual-unit").value,
      };
      if (manualPerson) { body.recipient_id = manualPerson; body.recipient = ""; }
      const res = await post("/api/manual", body);
      showResult("recorded", res.seq, true);
      $("manual-tracking").value = ""; $("manual-recipient").value = ""; $("manual-weight").value = "";
      manualPerson = "";
      $("manual-tracking").focus();
    } catch (e) {
      if (e.code === "unknown_person") { manualPerson = ""; $("manual-recipient").focus(); $("manual-recipient").select(); }
      showResult("notRecorded", e.message, false, e.code);
    }
  });
  $("photo-take").addEventListener("click", photoTake);
  $("photo-cancel").addEventListener("click", () => $("photo-dialog").close());
  $("photo-dialog").addEventListener("close", photoClosed);
  document.body.addEventListener("click", (ev) => {
    const b = ev.target.closest("button.photo");
    if (b) photoOpen(b.dataset.parcel, b.dataset.kind || "label", b.dataset.what || b.dataset.parcel);
  });
  document.body.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.reprint, button.device-test");
    if (!b) return;
    try {
      if (b.classList.contains("reprint")) {
        await post("/api/reprint", { station: b.dataset.station, parcel_id: b.dataset.id });
        showResult("reprinted", "", true);
      } else {
        const res = await post("/api/device-test", { device: b.dataset.device });
        showResult("", b.dataset.device + ": " + res.result, true);
      }
    } catch (e) {
      showResult("", e.message, false);
    }
  });
  connect();
});
