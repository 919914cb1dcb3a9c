// moqsrt's status page: draws the live broadcasts from the JSON the server put in the page,
// then polls /status.json every five seconds and updates them in place (a broadcast's card, and
// its player, are kept while it stays live). Stream names are user input: they only ever go
// into text nodes and attributes, never into markup. A hidden tab asks the server nothing (no
// poll, no thumbnail) and polls at once when it is shown again.

// Each poll costs the gateway ~1 ms of CPU (issue 11's budget for an open page is ~2 ms a
// second in all); the publish durations tick here every second in between.
const POLL_MS = 5000;
const TICK_MS = 1000;
const TOKEN_KEY = "moqsrt-token";

const config = JSON.parse(document.getElementById("moqsrt-config").textContent);

// A browser cannot send a header on a page load: the token may come as ?token=. Keep it for
// this tab only, take it out of the address bar, and send it as a header from now on.
const params = new URLSearchParams(location.search);
let token = sessionStorage.getItem(TOKEN_KEY);
if (params.has("token")) {
	token = params.get("token");
	sessionStorage.setItem(TOKEN_KEY, token);
	params.delete("token");
	const query = params.toString();
	history.replaceState(null, "", location.pathname + (query ? `?${query}` : "") + location.hash);
}
const headers = token ? { Authorization: `Bearer ${token}` } : {};

const cards = new Map(); // path -> { card, fields, img, thumbAt, thumbUrl, loading }
const list = document.getElementById("broadcasts");
const template = document.getElementById("broadcast-template");
const state = document.getElementById("state");
let updates = 0;

function bytes(n) {
	if (n == null) return "-";
	const units = ["B", "kB", "MB", "GB", "TB"];
	let i = 0;
	let v = n;
	while (v >= 1000 && i < units.length - 1) {
		v /= 1000;
		i += 1;
	}
	return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

function bitrate(bps) {
	if (bps == null) return "-";
	if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
	return `${Math.round(bps / 1e3)} kbit/s`;
}

function duration(s) {
	if (s == null) return "-";
	const t = Math.floor(s);
	const h = Math.floor(t / 3600);
	const m = Math.floor((t % 3600) / 60);
	const sec = String(t % 60).padStart(2, "0");
	return h ? `${h}h ${String(m).padStart(2, "0")}m ${sec}s` : `${m}m ${sec}s`;
}

function usage(u) {
	if (!u) return "-";
	return `${bytes(u.bytes)} (${u.frames.toLocaleString("en")} frames, ${u.groups.toLocaleString("en")} groups)`;
}

function newCard(b) {
	const card = template.content.firstElementChild.cloneNode(true);
	card.dataset.path = b.path;
	card.querySelector(".name").textContent = b.path;
	const img = card.querySelector("img.thumb");
	img.alt = `Latest keyframe of ${b.path}`;
	const player = card.querySelector(".moq-player");
	if (status.moq_url) {
		player.dataset.url = status.moq_url;
		player.dataset.name = b.path;
	} else {
		player.remove();
	}
	const fields = {};
	for (const dd of card.querySelectorAll("[data-field]")) fields[dd.dataset.field] = dd;
	// thumbAt -Infinity: never asked (performance.now() counts from the page load, so 0 is "just now").
	return { card, fields, img, thumbAt: -Infinity, thumbUrl: null, loading: false };
}

// How often to ask a broadcast's thumbnail (ms): as often as the server makes one at most
// (its http_thumbnail_interval_s, in every status); 0: thumbnails are off.
function thumbnailMs() {
	const s = status.thumbnail_interval_s;
	return typeof s === "number" && s > 0 ? s * 1000 : 0;
}

async function refreshThumbnail(entry, url) {
	const interval = thumbnailMs();
	entry.img.hidden = !url || !interval;
	if (entry.img.hidden) return;
	// A hidden tab asks for none: the server decodes a keyframe only when a thumbnail is asked.
	if (document.hidden || entry.loading || performance.now() - entry.thumbAt < interval) return;
	entry.loading = true;
	entry.thumbAt = performance.now();
	try {
		const response = await fetch(url, { headers, cache: "no-store" });
		if (!response.ok) {
			entry.thumbAt = -Infinity; // 404: no keyframe yet; the next poll asks again
			return;
		}
		const blob = await response.blob();
		const old = entry.thumbUrl;
		entry.thumbUrl = URL.createObjectURL(blob);
		entry.img.src = entry.thumbUrl;
		if (old) URL.revokeObjectURL(old);
	} catch (err) {
		entry.thumbAt = -Infinity;
		console.debug("thumbnail", err);
	} finally {
		entry.loading = false;
	}
}

let status = config.status;

function render() {
	const seen = new Set();
	let added = false;
	for (const b of status.broadcasts) {
		seen.add(b.path);
		let entry = cards.get(b.path);
		if (!entry) {
			entry = newCard(b);
			cards.set(b.path, entry);
			list.append(entry.card);
			added = true;
		}
		const f = entry.fields;
		f.codecs.textContent = b.codecs.length ? b.codecs.join(", ") : "(waiting for the catalog)";
		const v = b.video;
		f.resolution.textContent =
			v && v.width ? `${v.width}x${v.height}${v.framerate ? ` @ ${Math.round(v.framerate * 100) / 100} fps` : ""}` : "-";
		f.bitrate.textContent = bitrate(b.bitrate_bps);
		const srt = b.viewers.srt || 0;
		const moq = b.viewers.moq || 0;
		f.viewers.textContent = `${srt + moq} (SRT ${srt}, MoQ ${moq})`;
		f.viewers.dataset.srt = String(srt);
		f.viewers.dataset.moq = String(moq);
		f.ingress.textContent = usage(b.ingress);
		f.egress.textContent = usage(b.egress);
		// Counted on from here between polls (tick): the page's clock, from the server's figure.
		entry.startedAt = b.duration_s == null ? null : performance.now() / 1000 - b.duration_s;
		entry.protocol = b.protocol;
		showDuration(entry);
		refreshThumbnail(entry, b.thumbnail);
	}
	for (const [path, entry] of cards) {
		if (seen.has(path)) continue;
		entry.card.remove();
		if (entry.thumbUrl) URL.revokeObjectURL(entry.thumbUrl);
		cards.delete(path);
	}
	document.getElementById("empty").hidden = cards.size > 0;
	document.getElementById("count").textContent = `(${cards.size})`;
	// The player bundle (served at /web/player.js when it was built) mounts new placeholders.
	if (added && typeof window.moqMountPlayers === "function") window.moqMountPlayers();
	updates += 1;
	document.body.dataset.updates = String(updates);
}

function showDuration(entry) {
	const s = entry.startedAt == null ? null : performance.now() / 1000 - entry.startedAt;
	const over = entry.protocol ? ` over ${entry.protocol.toUpperCase()}` : "";
	entry.fields.duration.textContent = `${duration(s)}${over}`;
}

setInterval(() => {
	if (document.hidden) return;
	for (const entry of cards.values()) showDuration(entry);
}, TICK_MS);

function showState(text, error) {
	state.textContent = text;
	state.classList.toggle("error", Boolean(error));
}

let pollTimer = null;
let polling = false;

function schedulePoll() {
	clearTimeout(pollTimer);
	pollTimer = setTimeout(poll, POLL_MS);
}

async function poll() {
	pollTimer = null;
	// A hidden tab polls nothing; visibilitychange polls again when it is shown.
	if (document.hidden || polling) return;
	polling = true;
	try {
		const response = await fetch("/status.json", { headers, cache: "no-store" });
		if (response.status === 401) {
			showState("This page needs the server's token: open it as /?token=YOUR_TOKEN", true);
			return;
		}
		if (!response.ok) throw new Error(`HTTP ${response.status}`);
		status = await response.json();
		render();
		showState(`Updated ${new Date().toLocaleTimeString()}`, false);
	} catch (err) {
		showState(`Cannot reach the server (${err.message}); retrying`, true);
	} finally {
		polling = false;
		if (!document.hidden) schedulePoll();
	}
}

document.addEventListener("visibilitychange", () => {
	if (document.hidden) {
		clearTimeout(pollTimer);
		pollTimer = null;
	} else if (!polling) {
		clearTimeout(pollTimer);
		poll();
	}
});

// The publishing instructions follow the path typed in: the stream id names it as typed (the
// server puts it under its prefix), the broadcast is listed as PREFIX/PATH.
const pathInput = document.getElementById("stream-path");
const resource = config.resource;
const commands = [
	document.getElementById("ffmpeg-command"),
	document.getElementById("obs-server"),
	document.getElementById("play-command"),
];
const originals = commands.map((c) => c.textContent);
pathInput.addEventListener("input", () => {
	const path = pathInput.value.trim().replace(/^\/+|\/+$/g, "") || resource;
	commands.forEach((c, i) => {
		c.textContent = originals[i].replaceAll(`r=${resource},`, `r=${path},`);
	});
	document.getElementById("stream-resource").textContent = path;
	document.getElementById("listed-path").textContent = config.prefix ? `${config.prefix}/${path}` : path;
});

render();
showState(`Updated ${new Date().toLocaleTimeString()}`, false);
schedulePoll();
