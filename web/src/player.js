// moqsrt's in-browser player: mounts the MoQ project's own <moq-watch> element (@moq/watch, bundled
// at set-up by `make deps`) in every `div.moq-player[data-url][data-name]` of the page.
//
// `data-url` is the gateway's MoQ address as `http://host:port/` (the player fetches
// `/certificate.sha256` over TCP on that port to pin the gateway's self-signed certificate, then
// dials `https://host:port/` by WebTransport); `data-name` is the broadcast path (`live/cam1`).
// An optional `data-latency` (milliseconds) is passed on as the element's `latency` target.
//
// `window.moqPlayers` lists one state object per mounted player, read from the element's own
// signals, for the page and for tests:
//   { name, url, element, connection: "connecting"|"connected"|"disconnected",
//     broadcast: "offline"|"loading"|"live", received (video frames fed to the WebCodecs decoder),
//     rendered (decoded frames painted on the canvas), bytes (video bytes received), audioBytes (audio
//     bytes received: 0 while muted, when no audio is fetched), width, height (picture size) }
import "@moq/watch/element";

/** Mounts one <moq-watch> into `host` and returns its live state object. */
function mount(host) {
	const watch = document.createElement("moq-watch");
	watch.setAttribute("url", host.dataset.url);
	watch.setAttribute("name", host.dataset.name);
	// Browsers refuse to autoplay sound: start muted so video plays without a click.
	watch.setAttribute("muted", "");
	if (host.dataset.latency) watch.setAttribute("latency", host.dataset.latency);
	const canvas = document.createElement("canvas");
	canvas.style.maxWidth = "100%";
	watch.appendChild(canvas);
	host.replaceChildren(watch);

	const state = {
		name: host.dataset.name,
		url: host.dataset.url,
		element: watch,
		canvas,
		connection: "connecting",
		broadcast: "offline",
		received: 0,
		rendered: 0,
		bytes: 0,
		audioBytes: 0,
		width: 0,
		height: 0,
	};
	watch.connection.status.subscribe((value) => {
		state.connection = value;
		host.dataset.connection = value;
	});
	watch.broadcast.out.status.subscribe((value) => {
		state.broadcast = value;
		host.dataset.status = value;
	});
	watch.video.out.stats.subscribe((stats) => {
		if (stats) {
			state.received = stats.frameCount;
			state.bytes = stats.bytesReceived;
		}
	});
	watch.audio.out.stats.subscribe((stats) => {
		if (stats) state.audioBytes = stats.bytesReceived;
	});
	watch.video.out.display.subscribe((size) => {
		if (size) {
			state.width = size.width;
			state.height = size.height;
		}
	});
	watch.renderer.out.frame.subscribe((frame) => {
		if (frame) state.rendered += 1;
	});
	return state;
}

function mountAll() {
	const players = (window.moqPlayers ??= []);
	for (const host of document.querySelectorAll("div.moq-player[data-url][data-name]")) {
		if (host.dataset.mounted) continue;
		host.dataset.mounted = "1";
		players.push(mount(host));
	}
}

if (document.readyState === "loading") {
	document.addEventListener("DOMContentLoaded", mountAll, { once: true });
} else {
	mountAll();
}
// Pages that add placeholders later (a status page refreshing itself) call this again.
window.moqMountPlayers = mountAll;
