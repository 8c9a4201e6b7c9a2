// mailroomd custody views: hand-over at the counter, the handheld round
// and the parcels waiting for pickup. Every action goes through one outbox
// kept in the browser's storage: it survives a reload and a lost network,
// and each action carries a key the box commits exactly once.
"use strict";

Object.assign(T.de, {
  viewStatus: "Status", viewHandover: "Übergabe", viewRound: "Zustelltour", viewWaiting: "Abholbereit",
  handover: "Übergabe am Schalter", hoWho: "Ausweis, Empfänger- oder Sendungscode scannen", hoFind: "Suchen", hoReset: "Neu",
  age: "Wartet seit", location: "Ort", proof: "Nachweis", signHere: "Bitte hier unterschreiben", sigClear: "Unterschrift löschen",
  sigTake: "Unterschrift übernehmen", pin: "Abhol-PIN", proxy: "Abgeholt von (falls nicht der Empfänger)", hoDone: "Übergeben",
  handOverN: "{0} Sendung(en) übergeben", pickPerson: "Bitte die Person wählen:", round: "Tour", modeOut: "Auf Tour nehmen", modeDeliver: "Zustellen",
  scanHere: "Scannen", rdDone: "Erledigt", open: "Offen", overdue: "Überfällig", byRecipient: "Nach Empfänger",
  byLocation: "Nach Ort", count: "Sendungen", oldestWait: "Wartet seit", dailyLog: "Tagesprotokoll (CSV)", download: "Herunterladen",
  modes: "Scan-Modus", overdueAfter: "überfällig nach {0}",
  m_badge: "Ausweis", m_signature: "Unterschrift", m_pin: "PIN", m_clerk: "Bestätigung durch Mitarbeiter",
  mode_receive: "Annahme", mode_move: "Einlagern", mode_out_for_delivery: "Auf Tour", mode_deliver: "Zustellen", mode_return: "Rücksendung",
  noParcels: "Keine offenen Sendungen für {0}.", parcelsOf: "Offene Sendungen für {0}", selectSome: "Bitte Sendungen auswählen.",
  signFirst: "Bitte unterschreiben.", pinFirst: "Bitte die PIN jeder ausgewählten Sendung eingeben.", notSent: "noch nicht gesendet", sentOk: "gesendet",
  refusedMark: "abgelehnt", outboxN: "{0} nicht gesendet", badgeFirst: "Bitte zuerst den Ausweis des Empfängers scannen.",
  badgeIs: "Empfänger: {0}", outQueued: "Auf Tour vorgemerkt: {0}", deliverQueued: "Zustellung vorgemerkt: {0}", signFor: "Unterschrift für {0} Sendung(en) von {1}",
  codeIgnored: "Dieser Code bedeutet hier nichts.", awaitingAt: "Station {0}: {1} Sendung(en) warten auf Unterschrift oder PIN",
  takeOver: "Übernehmen", storedSig: "Gespeicherte Unterschrift", since: "seit",
  n_mode: "Modus: {0}", n_done: "{0}: erledigt", n_unknown_parcel: "Unbekannte Sendung – bitte zuerst annehmen",
  n_parcel_closed: "Sendung ist bereits {0}", n_parcel_held: "Sendung ist zurückgehalten", n_badge_required: "Bitte zuerst den Ausweis scannen",
  n_awaiting_proof: "Wartet auf Unterschrift oder PIN", n_location_needed: "Bitte den Lagerort scannen", n_not_moved: "Nicht eingelagert (kein Ort gescannt)",
  n_code_not_in_mode: "Code in diesem Modus ohne Bedeutung", n_already_received: "Etikett einer bereits angenommenen Sendung ({0})",
  st_delivered: "zugestellt", st_returned: "zurückgesendet", st_forwarded: "weitergeleitet", st_held: "zurückgehalten",
  st_received: "angenommen", st_stored: "eingelagert", st_out_for_delivery: "auf Tour",
  err_unknown_parcel: "Unbekannte Sendung – bitte zuerst annehmen.", err_parcel_closed: "Die Sendung ist bereits {0}.",
  err_parcel_held: "Die Sendung ist zurückgehalten.", err_proof_required: "Ein Nachweis fehlt.", err_proof_not_accepted: "Dieser Nachweis wird hier nicht akzeptiert.",
  err_bad_pin: "Falsche PIN.", err_pin_locked: "Zu viele falsche PINs – bitte einen anderen Nachweis nehmen.", err_no_pin: "Diese Sendung hat keine PIN.",
  err_bad_signature: "Die Unterschrift ist ungültig – bitte neu unterschreiben.", err_badge_required: "Bitte den Ausweis scannen.",
  err_round_required: "Bitte eine Tour angeben.", err_location_required: "Bitte einen Ort angeben.", err_reason_required: "Bitte einen Grund angeben.",
  err_too_large: "Die Unterschrift ist zu groß.", err_key_required: "Interner Fehler (Schlüssel fehlt).",
  err_to_required: "Bitte angeben, wohin die Sendung geht.", err_pin_required: "Bitte die PIN eingeben.",
  err_not_a_badge: "Das ist kein Mitarbeiterausweis.", err_key_reused: "Interner Fehler (Schlüssel doppelt).", err_bad_at: "Interner Fehler (Zeitangabe).", err_too_long: "Eine Angabe ist zu lang.",
  err_not_a_delegate: "Der Inhaber dieses Ausweises darf für diesen Empfänger nicht abholen: nur der Empfänger und seine Vertreter dürfen das.",
  n_not_a_delegate: "Ausweisinhaber darf für diesen Empfänger nicht abholen (nur Empfänger und Vertreter)",
  err_person_required: "Bitte eine Person aus dem Verzeichnis wählen.",
  needsTitle: "Sendungen ohne Empfänger", needsDone: "Zugeordnet", needsNone: "Alle offenen Sendungen haben einen Empfänger.",
  needsSearch: "Empfänger suchen", hint: "Etikett", typed: "Eingegeben", needsMore: "{0} von {1} angezeigt (älteste zuerst)",
});
Object.assign(T.en, {
  viewStatus: "Status", viewHandover: "Hand-over", viewRound: "Round", viewWaiting: "Waiting",
  handover: "Hand-over at the counter", hoWho: "Scan a badge, recipient or parcel code", hoFind: "Find", hoReset: "New",
  age: "Waiting for", location: "Location", proof: "Proof", signHere: "Please sign here", sigClear: "Clear signature",
  sigTake: "Take signature", pin: "Pickup PIN", proxy: "Collected by (if not the recipient)", hoDone: "Handed over",
  handOverN: "Hand over {0} parcel(s)", pickPerson: "Choose the person:", round: "Round", modeOut: "Take out", modeDeliver: "Deliver",
  scanHere: "Scan", rdDone: "Done", open: "Open", overdue: "Overdue", byRecipient: "By recipient",
  byLocation: "By location", count: "Parcels", oldestWait: "Waiting for", dailyLog: "Daily log (CSV)", download: "Download",
  modes: "Scan mode", overdueAfter: "overdue after {0}",
  m_badge: "Badge", m_signature: "Signature", m_pin: "PIN", m_clerk: "Confirmed by clerk",
  mode_receive: "Receive", mode_move: "Shelve", mode_out_for_delivery: "Out for delivery", mode_deliver: "Deliver", mode_return: "Return",
  noParcels: "No open parcels for {0}.", parcelsOf: "Open parcels for {0}", selectSome: "Select the parcels first.",
  signFirst: "Please sign first.", pinFirst: "Enter the PIN of every parcel selected.", notSent: "not yet sent", sentOk: "sent",
  refusedMark: "refused", outboxN: "{0} not sent", badgeFirst: "Scan the recipient's badge first.",
  badgeIs: "Recipient: {0}", outQueued: "Out for delivery, noted: {0}", deliverQueued: "Delivery noted: {0}", signFor: "Signature for {0} parcel(s) of {1}",
  codeIgnored: "This code means nothing here.", awaitingAt: "Station {0}: {1} parcel(s) wait for a signature or PIN",
  takeOver: "Take over", storedSig: "Stored signature", since: "since",
  n_mode: "Mode: {0}", n_done: "{0}: done", n_unknown_parcel: "Unknown parcel – receive it first",
  n_parcel_closed: "Parcel is already {0}", n_parcel_held: "Parcel is held", n_badge_required: "Scan the badge first",
  n_awaiting_proof: "Waiting for a signature or PIN", n_location_needed: "Scan the location", n_not_moved: "Not shelved (no location scanned)",
  n_code_not_in_mode: "Code means nothing in this mode", n_already_received: "Label of a parcel received already ({0})",
  st_delivered: "delivered", st_returned: "returned", st_forwarded: "forwarded", st_held: "held",
  st_received: "received", st_stored: "stored", st_out_for_delivery: "out for delivery",
  err_unknown_parcel: "Unknown parcel – receive it first.", err_parcel_closed: "The parcel is already {0}.",
  err_parcel_held: "The parcel is held.", err_proof_required: "Proof is missing.", err_proof_not_accepted: "This proof is not accepted here.",
  err_bad_pin: "Wrong PIN.", err_pin_locked: "Too many wrong PINs – take another proof.", err_no_pin: "This parcel has no PIN.",
  err_bad_signature: "The signature is not valid – please sign again.", err_badge_required: "Scan the badge.",
  err_round_required: "Name the round.", err_location_required: "Name the location.", err_reason_required: "Give a reason.",
  err_too_large: "The signature is too large.", err_key_required: "Internal error (no key).",
  err_to_required: "Say where the parcel goes.", err_pin_required: "Enter the PIN.",
  err_not_a_badge: "That is no staff badge.", err_key_reused: "Internal error (key used twice).", err_bad_at: "Internal error (time).", err_too_long: "An entry is too long.",
  err_not_a_delegate: "The badge's holder may not collect for this recipient: only the recipient and their delegates may.",
  n_not_a_delegate: "The badge's holder may not collect for this recipient (only the recipient and delegates)",
  err_person_required: "Choose a person of the directory.",
  needsTitle: "Parcels without a recipient", needsDone: "Assigned", needsNone: "Every open parcel has a recipient.",
  needsSearch: "Find the recipient", hint: "Label", typed: "Typed", needsMore: "{0} of {1} shown (oldest first)",
});

const tf = (k, ...a) => a.reduce((s, v, i) => s.replace("{" + i + "}", () => String(v)), t(k));
const store = {
  get(k, d) { try { const v = localStorage.getItem(k); return v ? JSON.parse(v) : d; } catch (e) { return d; } },
  set(k, v) { try { localStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* full: the state lives on in memory */ } },
};
function newKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
function stateText(st) { return t("st_" + st); }
function errText(code, state, fallback) {
  const k = "err_" + code;
  return T[lang][k] ? tf(k, stateText(state || "")) : fallback;
}

// ---- the outbox ---------------------------------------------------------
// Items: {key, body, label, view, state: pending|sent|refused, code, msg,
// parcel_id, at}. Sent in order; a network error stops the round until the
// next try; a refusal is final and shown.
const OUTBOX = "mailroomd.outbox";
let outbox = store.get(OUTBOX, []);
let sending = false;

function saveOutbox() {
  // Keep what is unsent, and the last 100 done.
  const pending = outbox.filter((i) => i.state === "pending");
  const done = outbox.filter((i) => i.state !== "pending").slice(-100);
  outbox = outbox.filter((i) => i.state === "pending" || done.includes(i));
  store.set(OUTBOX, outbox);
  const n = pending.length;
  $("outbox-badge").hidden = n === 0;
  $("outbox-badge").textContent = tf("outboxN", n);
  renderOutbox();
}

function enqueue(body, label, view) {
  const item = { key: newKey(), body, label, view, user: session.user, state: "pending", at: new Date().toISOString() };
  item.body.key = item.key;
  item.body.at = item.at;
  outbox.push(item);
  saveOutbox();
  send();
  return item;
}

async function send() {
  if (sending || !session) return;
  sending = true;
  try {
    for (const item of outbox) {
      // An action is sent in the session of the user who did it: after a
      // change of user it waits until that user signs in again.
      if (item.state !== "pending" || (item.user && item.user !== session.user)) continue;
      let r;
      try {
        r = await fetch("/api/custody", {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf },
          body: JSON.stringify(item.body),
        });
      } catch (e) {
        break; // the box is out of reach: try again later, in order
      }
      const data = await r.json().catch(() => ({}));
      if (r.ok) {
        Object.assign(item, { state: "sent", parcel_id: data.parcel_id, seq: data.seq });
        const signed = item.body.proof && item.body.proof.signature;
        forget(item);
        if (signed && item.view === "handover") readBack(item);
      } else if (r.status === 401 || r.status === 403 && !data.code || r.status >= 500) {
        break; // signed out or the box is busy: keep it and try again
      } else {
        Object.assign(item, { state: "refused", code: data.code, msg: data.error, parcel_state: data.state, parcel_id: data.parcel_id });
        forget(item); // final: nothing to send again
      }
      saveOutbox();
      if (item.view === "needs") loadNeeds(); // answered: the parcel leaves the list, or comes back
    }
  } finally {
    sending = false;
    saveOutbox();
  }
}
setInterval(send, 3000);
window.addEventListener("online", send);

// forget drops what an answered action no longer needs from the browser's
// storage: signature, PIN, badge, who collected.
function forget(item) {
  const b = item.body;
  if (b.proof) { delete b.proof.signature; delete b.proof.pin; delete b.proof.badge; }
  delete b.proxy; delete b.recipient;
}

// clearCustody forgets the hand-over and round of this browser (at sign
// out); actions not yet sent stay, and wait for their user.
function clearCustody() {
  for (const k of [HO, RD, "mailroomd.handover.sig", "mailroomd.round.sig"]) localStorage.removeItem(k);
  outbox = outbox.filter((i) => i.state === "pending");
  store.set(OUTBOX, outbox);
}
window.onLogout = clearCustody;

// storedSigs holds, in memory only, the signatures read back from the box
// after a hand-over, by outbox key.
const storedSigs = new Map();
async function readBack(item) {
  const r = await fetch("/api/parcels/" + encodeURIComponent(item.parcel_id) + "/signature", { credentials: "same-origin" }).catch(() => null);
  if (!r || !r.ok) return;
  const data = await r.json();
  storedSigs.set(item.key, data.signature);
  renderOutbox();
}

function outboxItem(i) {
  const cls = i.state === "sent" ? "ok" : i.state === "refused" ? "bad" : "warn";
  const what = i.state === "sent" ? t("sentOk") : i.state === "refused" ? errText(i.code, i.parcel_state, i.msg) : t("notSent");
  const li = el("li", { class: cls, "data-key": i.key, "data-state": i.state, "data-parcel": i.parcel_id || "" },
    el("span", {}, i.label), " – ", el("span", { class: "what" }, what));
  if (storedSigs.has(i.key)) li.append(el("span", { class: "stored", title: t("storedSig") }, svgOf(storedSigs.get(i.key))));
  return li;
}

function renderOutbox() {
  for (const [id, v] of [["rd-outbox", "round"], ["ho-results", "handover"], ["needs-results", "needs"]]) {
    const list = $(id);
    if (list) list.replaceChildren(...outbox.filter((i) => i.view === v).slice().reverse().map(outboxItem));
  }
}

// ---- codes ------------------------------------------------------------------
// The box's internal barcode rules, kept for when it is out of reach.
let codes = store.get("mailroomd.codes", []);
function kindOf(code) {
  const c = code.trim();
  for (const r of codes) {
    if (r.prefix && c.toUpperCase().startsWith(r.prefix.toUpperCase())) return r;
    if (r.pattern) {
      try { if (new RegExp(r.pattern).test(c)) return r; } catch (e) { /* a Go-only pattern */ }
    }
  }
  return { kind: "parcel" };
}

// ---- signature pads ---------------------------------------------------------
// Strokes in the 1000×400 box the box accepts, integer points; kept in
// storage after every stroke so that a reload keeps the signature.
class Pad {
  constructor(canvas, key) {
    this.c = canvas; this.key = key;
    this.strokes = store.get(key, []);
    this.cur = null;
    canvas.style.touchAction = "none";
    canvas.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      canvas.setPointerCapture(e.pointerId);
      this.cur = [this.pt(e)];
      this.strokes.push(this.cur);
      this.draw();
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!this.cur) return;
      e.preventDefault();
      const p = this.pt(e), q = this.cur[this.cur.length - 1];
      if (p[0] !== q[0] || p[1] !== q[1]) { this.cur.push(p); this.draw(); }
    });
    const end = () => {
      if (!this.cur) return;
      if (this.cur.length === 1) this.cur.push(this.cur[0].slice());
      this.cur = null;
      store.set(this.key, this.strokes);
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    this.draw();
  }
  pt(e) {
    const r = this.c.getBoundingClientRect();
    const x = Math.round((e.clientX - r.left) / r.width * 1000), y = Math.round((e.clientY - r.top) / r.height * 400);
    return [Math.min(1000, Math.max(0, x)), Math.min(400, Math.max(0, y))];
  }
  draw() {
    const g = this.c.getContext("2d");
    g.clearRect(0, 0, 1000, 400);
    g.lineWidth = 4; g.lineCap = "round"; g.lineJoin = "round"; g.strokeStyle = "#111";
    for (const s of this.strokes) {
      g.beginPath();
      s.forEach((p, i) => (i ? g.lineTo(p[0], p[1]) : g.moveTo(p[0], p[1])));
      g.stroke();
    }
  }
  clear() { this.strokes = []; this.cur = null; store.set(this.key, []); this.draw(); }
  empty() { return this.strokes.length === 0; }
  path() { return this.strokes.map((s) => s.map((p, i) => (i ? "L " : "M ") + p[0] + " " + p[1]).join(" ")).join(" "); }
}

// svgOf draws stored path data (the signature read back from the box).
function svgOf(d) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 1000 400");
  svg.setAttribute("class", "sig-view");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", d);
  svg.append(path);
  return svg;
}

// ---- hand-over at the counter ----------------------------------------------
// State kept in session storage, so that a reload mid-signature keeps the
// recipient, the parcels and the ticks.
const HO = "mailroomd.handover";
let ho = store.get(HO, null) || { who: "", badge: "", parcels: [], selected: [], method: "", id: newKey() };
let hoPad = null;
const hoPins = new Map();
function saveHo() { store.set(HO, ho); }

async function hoFind(code) {
  code = code.trim();
  if (!code) return;
  const hit = ho.parcels.find((p) => p.id === code.toLowerCase() || p.tracking === code.toUpperCase().replace(/ /g, ""));
  if (hit) { // a parcel of the list scanned: tick it
    if (!ho.selected.includes(hit.id)) ho.selected.push(hit.id);
    saveHo(); renderHo(); return;
  }
  let who = code, tick = null;
  if (kindOf(code).kind === "parcel") {
    const r = await fetch("/api/parcels/find?code=" + encodeURIComponent(code), { credentials: "same-origin" });
    const data = await r.json().catch(() => ({}));
    if (r.status === 404 && await hoPeople(code)) return; // a name: the directory
    if (!r.ok) { hoMsg(errText(data.code, data.state, data.error), false); return; }
    if (["delivered", "returned", "forwarded"].includes(data.state)) { hoMsg(tf("err_parcel_closed", stateText(data.state)), false); return; }
    who = data.recipient || "";
    tick = data.id;
    if (!who) { ho = { ...ho, who: "", badge: "", parcels: [data], selected: [data.id] }; saveHo(); renderHo(); return; }
  }
  const r = await fetch("/api/parcels?recipient=" + encodeURIComponent(who), { credentials: "same-origin" });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) { hoMsg(errText(data.code, "", data.error), false); return; }
  const badge = kindOf(code).kind === "recipient" ? code : "";
  ho = { who, badge, parcels: data.parcels, selected: tick ? [tick] : [], method: ho.method, id: newKey() };
  if (hoPad) hoPad.clear();
  saveHo();
  renderHo();
  hoMsg(data.parcels.length ? tf("parcelsOf", who) : tf("noParcels", who), data.parcels.length > 0);
}

// hoPeople searches the directory for a name typed at the counter and
// offers the people found; it reports whether it found any.
async function hoPeople(q) {
  const people = await findPeople(q);
  if (people.length === 0) return false;
  const list = $("ho-people");
  list.replaceChildren(...people.map((p) => {
    const b = el("button", { type: "button", class: "person", "data-person": p.id }, p.name + (p.location ? " · " + p.location : ""));
    b.addEventListener("click", () => hoPerson(p.id));
    return el("li", {}, b);
  }));
  hoMsg(t("pickPerson"), true);
  return true;
}

// hoPerson lists the open parcels of a person of the directory.
async function hoPerson(id) {
  $("ho-people").replaceChildren();
  const r = await fetch("/api/parcels?person=" + encodeURIComponent(id), { credentials: "same-origin" });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) { hoMsg(errText(data.code, "", data.error), false); return; }
  ho = { who: data.recipient, badge: "", parcels: data.parcels, selected: [], method: ho.method, id: newKey() };
  if (hoPad) hoPad.clear();
  saveHo();
  renderHo();
  hoMsg(data.parcels.length ? tf("parcelsOf", data.recipient) : tf("noParcels", data.recipient), data.parcels.length > 0);
}

function hoMsg(text, ok) { const m = $("ho-msg"); m.textContent = text; m.className = ok ? "ok" : "bad"; }

function renderHo() {
  const rows = $("ho-parcels").tBodies[0];
  rows.replaceChildren(...ho.parcels.map((p) => {
    const box = el("input", { type: "checkbox", class: "ho-tick", "data-id": p.id });
    box.checked = ho.selected.includes(p.id);
    // The recipient as the directory names them now, else as scanned or typed.
    const to = p.person_name || p.recipient;
    const what = el("td", { class: "tracking" }, (p.carrier ? p.carrier + " " : "") + (p.tracking || p.id),
      to ? el("span", { class: "recipient" }, " → " + to) : "");
    if (ho.method === "pin") { // each parcel has a PIN of its own
      const pin = el("input", { class: "ho-pin", "data-id": p.id, inputmode: "numeric", autocomplete: "off", maxlength: "12",
        placeholder: t("pin"), "aria-label": t("pin") });
      pin.value = hoPins.get(p.id) || ""; // typed PINs live in memory only, never in storage
      pin.addEventListener("input", () => hoPins.set(p.id, pin.value));
      what.append(pin);
    }
    return el("tr", { class: p.overdue ? "overdue" : "", "data-id": p.id },
      el("td", {}, box), what, el("td", {}, fmtAge(p.age_s)), el("td", {}, p.location || p.round || ""),
      el("td", {}, photoButton(p.id, "proof", p.tracking || p.id)));
  }));
  $("ho-proof").hidden = ho.parcels.length === 0;
  const methods = (last && last.delivery.proof) || store.get("mailroomd.proof", []);
  if (!methods.includes(ho.method)) ho.method = methods.find((m) => m !== "badge" || ho.badge) || methods[0] || "";
  $("ho-methods").replaceChildren(...methods.filter((m) => m !== "badge" || ho.badge).map((m) => {
    const b = el("button", { type: "button", "data-method": m, class: m === ho.method ? "active" : "" }, t("m_" + m));
    b.addEventListener("click", () => { ho.method = m; saveHo(); renderHo(); });
    return b;
  }));
  $("ho-sign").hidden = ho.method !== "signature";
  $("ho-submit").textContent = tf("handOverN", ho.selected.length);
  $("ho-who").focus();
}

function hoSubmit() {
  if (ho.selected.length === 0) { hoMsg(t("selectSome"), false); return; }
  const proof = { method: ho.method };
  const pins = {};
  if (ho.method === "signature") {
    if (hoPad.empty()) { hoMsg(t("signFirst"), false); return; }
    proof.signature = hoPad.path();
  } else if (ho.method === "pin") {
    for (const id of ho.selected) {
      const input = document.querySelector('input.ho-pin[data-id="' + id + '"]');
      pins[id] = input ? input.value.trim() : "";
      if (!pins[id]) { hoMsg(t("pinFirst"), false); if (input) input.focus(); return; }
    }
  } else if (ho.method === "badge") {
    proof.badge = ho.badge;
  }
  const proxy = $("ho-proxy").value.trim();
  for (const id of ho.selected) {
    const p = ho.parcels.find((x) => x.id === id);
    // One action per parcel, each with its own key, made once: a retry
    // sends the same key.
    const pr = ho.method === "pin" ? { method: "pin", pin: pins[id] } : { ...proof };
    enqueue({ action: "deliver", parcel: id, proof: pr, proxy, recipient: ho.badge || "" }, (p && (p.tracking || p.id)) || id, "handover");
  }
  ho.parcels = ho.parcels.filter((p) => !ho.selected.includes(p.id));
  ho.selected = [];
  hoPins.clear();
  $("ho-proxy").value = "";
  hoPad.clear();
  saveHo();
  renderHo();
}

// ---- the round (handheld) ---------------------------------------------------
const RD = "mailroomd.round";
let rd = store.get(RD, null) || { round: "", mode: "out_for_delivery", badge: "", toSign: [] };
let rdPad = null;
function saveRd() { store.set(RD, rd); }
function rdMsg(text, ok) { const m = $("rd-msg"); m.textContent = text; m.className = ok ? "ok" : "bad"; }

function rdScan(code) {
  code = code.trim();
  if (!code) return;
  const k = kindOf(code);
  if (k.kind === "action") {
    if (k.action === "out_for_delivery" || k.action === "deliver") { rd.mode = k.action; rd.badge = ""; saveRd(); renderRd(); }
    else rdMsg(t("codeIgnored"), false);
    return;
  }
  if (k.kind === "round") { rd.round = code; saveRd(); renderRd(); return; }
  if (rd.mode === "out_for_delivery") {
    if (k.kind !== "parcel") { rdMsg(t("codeIgnored"), false); return; }
    enqueue({ action: "out_for_delivery", parcel: code, round: rd.round || session.user }, code, "round");
    rdMsg(tf("outQueued", code), true);
    return;
  }
  if (k.kind === "recipient") {
    rd.badge = code; rd.toSign = []; if (rdPad) rdPad.clear();
    saveRd(); renderRd(); rdMsg(tf("badgeIs", code), true);
    return;
  }
  if (k.kind !== "parcel") { rdMsg(t("codeIgnored"), false); return; }
  if (!rd.badge) { rdMsg(t("badgeFirst"), false); return; }
  const proof = (last && last.delivery.proof) || store.get("mailroomd.proof", []);
  if (proof.includes("badge")) {
    enqueue({ action: "deliver", parcel: code, proof: { method: "badge", badge: rd.badge } }, code, "round");
    rdMsg(tf("deliverQueued", code), true);
  } else {
    if (!rd.toSign.includes(code)) rd.toSign.push(code);
    saveRd(); renderRd();
  }
}

function rdTakeSignature() {
  if (rdPad.empty()) { rdMsg(t("signFirst"), false); return; }
  const proof = { method: "signature", signature: rdPad.path() };
  for (const code of rd.toSign) enqueue({ action: "deliver", parcel: code, proof: { ...proof }, recipient: rd.badge }, code, "round");
  rd.toSign = [];
  rdPad.clear();
  saveRd(); renderRd();
}

function renderRd() {
  $("rd-round").value = rd.round;
  for (const b of $("rd-modes").querySelectorAll("button")) b.classList.toggle("active", b.dataset.mode === rd.mode);
  $("rd-sign").hidden = rd.toSign.length === 0;
  $("rd-sign-for").textContent = tf("signFor", rd.toSign.length, rd.badge);
  if (rd.mode === "deliver" && rd.badge) rdMsg(tf("badgeIs", rd.badge), true);
  if (rd.toSign.length === 0) $("rd-scan").focus();
}

// ---- waiting for pickup -----------------------------------------------------
async function loadWaiting() {
  const r = await fetch("/api/waiting", { credentials: "same-origin" }).catch(() => null);
  if (!r || !r.ok) return;
  const w = await r.json();
  $("wt-open").textContent = w.open;
  $("wt-overdue").textContent = w.overdue;
  $("wt-overdue").className = "big " + (w.overdue > 0 ? "bad" : "ok");
  $("wt-overdue-after").textContent = tf("overdueAfter", fmtAge(w.overdue_after_s));
  const rows = (gs) => gs.map((g) => el("tr", { class: g.overdue > 0 ? "overdue" : "" },
    el("td", {}, g.name || g.key || g.person || "–"), el("td", {}, g.count), el("td", {}, g.overdue), el("td", {}, fmtAge(g.oldest_s))));
  $("wt-recipients").tBodies[0].replaceChildren(...rows(w.by_recipient));
  $("wt-locations").tBodies[0].replaceChildren(...rows(w.by_location));
  $("wt-report").hidden = !(session && session.role === "admin");
}

// ---- parcels that need a recipient -------------------------------------------
// Each lists the name its label prints and the text typed at receipt, and
// offers the directory to choose the person; the choice is an "assign"
// action in the outbox that holds the person's id alone. A parcel with an
// assign not yet answered is not listed; the list is fetched again once the
// box answered.
let needs = { count: 0, parcels: [] };
let needsAt = 0, needsTop = "", needsBusy = false, needsAgain = false;
const needsTa = new WeakMap(); // item -> its type-ahead

async function loadNeeds() {
  if (!session) return;
  if (needsBusy) { needsAgain = true; return; }
  needsBusy = true;
  try {
    needsAt = Date.now();
    const r = await fetch("/api/needs-recipient", { credentials: "same-origin" }).catch(() => null);
    if (!r) return;
    if (r.status === 404) { $("needs-count").textContent = ""; return; } // no custody on this box
    const data = await r.json().catch(() => ({}));
    if (!r.ok) { needsMsg(errText(data.code, "", data.error || r.statusText), false); return; }
    needs = { count: data.count || 0, parcels: data.parcels || [] };
    renderNeeds();
  } finally {
    needsBusy = false;
    if (needsAgain) { needsAgain = false; loadNeeds(); }
  }
}

function needsMsg(text, ok) { const m = $("needs-msg"); m.textContent = text; m.className = ok ? "" : "bad"; }

// renderNeeds sets the count in the menu, and the list when it is shown. It
// keeps the items still listed as they are, so that a refresh moves neither
// the focus nor what the clerk typed.
function renderNeeds() {
  const queued = new Set(outbox.filter((i) => i.state === "pending" && i.body.action === "assign").map((i) => i.body.parcel));
  const ps = needs.parcels.filter((p) => !queued.has(p.id));
  const count = Math.max(0, needs.count - (needs.parcels.length - ps.length));
  $("needs-count").textContent = count;
  if (view !== "needs") return; // fetched again when it opens
  needsMsg(count === 0 ? t("needsNone") : count > ps.length ? tf("needsMore", ps.length, count) : "", true);
  const list = $("needs-list");
  const have = new Map([...list.children].map((li) => [li.dataset.parcel, li]));
  const want = new Set(ps.map((p) => p.id));
  for (const [id, li] of have) if (!want.has(id)) li.remove();
  const fresh = [];
  let prev = null;
  for (const p of ps) {
    let li = have.get(p.id);
    if (!li) { li = needsItem(p); fresh.push(li); }
    needsInfo(li, p);
    const at = prev ? prev.nextSibling : list.firstChild;
    if (li !== at) list.insertBefore(li, at);
    prev = li;
  }
  (async () => { // the names the labels print, searched one after the other
    for (const li of fresh) if (li.isConnected && view === "needs" && li.querySelector("input").value) await needsTa.get(li).search();
  })();
}

function needsItem(p) {
  const input = el("input", { class: "needs-search", autocomplete: "off", maxlength: "128", enterkeyhint: "search" });
  input.value = p.hint || "";
  const sug = el("ul", { class: "suggest", id: "needs-suggest-" + p.id });
  const li = el("li", { "data-parcel": p.id }, el("div", { class: "what" }), el("div", { class: "ta" }, input, sug));
  needsTa.set(li, typeahead(input, sug, (person) => {
    enqueue({ action: "assign", parcel: p.id, person: person.id }, p.tracking || p.id, "needs");
    renderNeeds();
  }));
  return li;
}

// needsInfo (re)writes what an item says of its parcel.
function needsInfo(li, p) {
  li.className = p.overdue ? "overdue" : "";
  const meta = [fmtAge(p.age_s)];
  if (p.hint) meta.push(t("hint") + ": " + p.hint);
  if (p.recipient) meta.push(t("typed") + ": " + p.recipient);
  li.firstChild.replaceChildren(el("strong", { class: "tracking" }, (p.carrier ? p.carrier + " " : "") + (p.tracking || p.id)),
    " ", el("span", { class: "meta" }, meta.join(" · ")));
  const input = li.querySelector("input.needs-search");
  input.placeholder = t("needsSearch");
  input.setAttribute("aria-label", t("needsSearch") + " – " + (p.tracking || p.id));
}

// ---- station modes on the status view -------------------------------------
const MODES = ["receive", "move", "out_for_delivery", "deliver", "return"];
function renderModes(s) {
  const names = Object.keys(s.modes || {}).sort();
  $("modes-section").hidden = names.length === 0;
  const active = document.activeElement && document.activeElement.classList.contains("mode-select");
  if (active) return; // do not pull the list from under the clerk's hand
  $("modes").replaceChildren(...names.map((name) => {
    const m = s.modes[name];
    const sel = el("select", { class: "mode-select", "data-station": name });
    for (const mode of MODES) {
      const o = el("option", { value: mode }, t("mode_" + mode));
      o.selected = mode === m.mode;
      sel.append(o);
    }
    sel.addEventListener("change", () => post("/api/mode", { station: name, mode: sel.value }).catch((e) => showResult("", e.message, false)));
    const notes = (m.notices || []).slice(0, 5).map((n) => el("li", { class: n.code === "done" || n.code === "mode" ? "ok" : "warn" },
      fmtTime(n.time) + " " + tf("n_" + n.code, n.code === "mode" ? t("mode_" + n.mode) : n.code === "done" ? n.type : stateText(n.state || ""))));
    const extra = [];
    if (m.location) extra.push(t("location") + ": " + m.location);
    if (m.round) extra.push(t("round") + ": " + m.round);
    return el("div", { class: "mode", "data-station": name }, el("strong", {}, name + " "), sel,
      el("span", {}, " " + extra.join(" · ")), el("ul", { class: "notices" }, ...notes));
  }));
}

function renderAwaiting(s) {
  const out = [];
  for (const [name, m] of Object.entries(s.modes || {})) {
    if (!m.awaiting || m.awaiting.length === 0) continue;
    const b = el("button", { type: "button" }, t("takeOver"));
    b.addEventListener("click", () => {
      const badge = m.awaiting[0].badge;
      ho = { who: badge, badge, parcels: m.awaiting.map((a) => ({ id: a.parcel_id, tracking: a.tracking, carrier: a.carrier, age_s: 0 })),
        selected: m.awaiting.map((a) => a.parcel_id), method: "", id: newKey() };
      saveHo(); renderHo();
    });
    out.push(el("p", { class: "awaiting" }, tf("awaitingAt", name, m.awaiting.length) + " ", b));
  }
  $("ho-awaiting").replaceChildren(...out);
}

window.onStatus = (s) => {
  codes = s.codes || [];
  store.set("mailroomd.codes", codes);
  store.set("mailroomd.proof", s.delivery.proof || []);
  renderModes(s);
  renderAwaiting(s);
  if (view === "handover" && ho.parcels.length) renderHoLight();
  // New parcels may need a recipient; others may have been assigned
  // elsewhere: fetched again on a new parcel, and now and then.
  const top = s.events.length ? s.events[0].id : "";
  if (top !== needsTop || Date.now() - needsAt > (view === "needs" ? 5000 : 30000)) { needsTop = top; loadNeeds(); }
};

// renderHoLight refreshes what the status may change without moving focus.
function renderHoLight() { $("ho-submit").textContent = tf("handOverN", ho.selected.length); }

window.onLang = () => {
  if (!hoPad) return; // before the page is set up
  renderOutbox();
  if (view === "handover") renderHo();
  if (view === "round") renderRd();
  if (view === "waiting") loadWaiting();
  if (view === "needs") renderNeeds();
};

// ---- views --------------------------------------------------------------------
let view = "status";
function showView() {
  view = (location.hash || "#status").slice(1);
  if (!["status", "handover", "round", "waiting", "needs"].includes(view)) view = "status";
  for (const v of document.querySelectorAll("main.view")) v.hidden = v.id !== "view-" + view;
  for (const a of document.querySelectorAll("#views a")) a.classList.toggle("active", a.dataset.view === view);
  if (view === "handover") renderHo();
  if (view === "round") renderRd();
  if (view === "waiting") loadWaiting();
  if (view === "needs") loadNeeds();
}
window.addEventListener("hashchange", showView);

document.addEventListener("DOMContentLoaded", () => {
  hoPad = new Pad($("ho-canvas"), "mailroomd.handover.sig");
  rdPad = new Pad($("rd-canvas"), "mailroomd.round.sig");
  $("ho-find").addEventListener("submit", (e) => { e.preventDefault(); const v = $("ho-who").value; $("ho-who").value = ""; hoFind(v); });
  $("ho-reset").addEventListener("click", () => { $("ho-people").replaceChildren(); ho = { who: "", badge: "", parcels: [], selected: [], method: "", id: newKey() }; hoPad.clear(); saveHo(); renderHo(); hoMsg("", true); });
  $("ho-parcels").addEventListener("change", (e) => {
    const b = e.target.closest("input.ho-tick");
    if (!b) return;
    ho.selected = b.checked ? [...new Set([...ho.selected, b.dataset.id])] : ho.selected.filter((x) => x !== b.dataset.id);
    saveHo(); renderHoLight();
  });
  $("ho-clear").addEventListener("click", () => hoPad.clear());
  $("ho-submit").addEventListener("click", hoSubmit);
  $("rd-scan").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault();
    const v = $("rd-scan").value; $("rd-scan").value = ""; rdScan(v);
  });
  $("rd-round").addEventListener("change", () => { rd.round = $("rd-round").value.trim(); saveRd(); });
  for (const b of $("rd-modes").querySelectorAll("button")) {
    b.addEventListener("click", () => { rd.mode = b.dataset.mode; rd.badge = ""; rd.toSign = []; saveRd(); renderRd(); });
  }
  $("rd-clear").addEventListener("click", () => rdPad.clear());
  $("rd-sign-ok").addEventListener("click", rdTakeSignature);
  $("wt-day").value = new Date().toISOString().slice(0, 10);
  $("wt-report-form").addEventListener("submit", (e) => {
    e.preventDefault();
    location.href = "/api/report.csv?day=" + encodeURIComponent($("wt-day").value);
  });
  saveOutbox();
  showView();
  // The session is fetched by app.js; send what waits once it is known, and
  // list the hand-over again with its photo buttons.
  const wait = setInterval(() => {
    if (!session) return;
    clearInterval(wait); send(); loadNeeds();
    if (view === "waiting") loadWaiting();
    if (view === "handover" && ho.parcels.length) renderHo();
  }, 200);
});
