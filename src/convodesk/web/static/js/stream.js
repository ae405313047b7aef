// The live stream of the desktop: an EventSource on /api/v1/stream that is opened again
// after any error, with a growing pause (1 s, 2 s, 4 s ... 30 s). Every (re)connection calls
// `onOpen`, where the desktop fetches its state again: whatever happened while the stream
// was down is then on screen. While the stream is down, `onDown` runs at every attempt, so
// the page still refreshes itself now and then.

export const EVENT_TYPES = [
  "message.created",
  "message.status",
  "conversation.updated",
  "offer.created",
  "offer.closed",
  "queue.updated",
  "presence.updated",
  "typing",
];

export class LiveStream {
  constructor(url, { onEvent, onOpen, onDown, onStatus }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.onDown = onDown;
    this.onStatus = onStatus;
    this.attempts = 0;
    this.source = null;
    this.timer = null;
  }

  start() {
    this.connect();
  }

  connect() {
    this.timer = null;
    const source = new EventSource(this.url, { withCredentials: true });
    this.source = source;
    source.onopen = () => {
      this.attempts = 0;
      this.onStatus("live");
      this.onOpen();
    };
    // The event's type is in its JSON ("type"); a server that also names events with an
    // `event:` line is understood as well.
    source.onmessage = (event) => this.dispatch(event.data);
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (event) => this.dispatch(event.data, type));
    }
    source.onerror = () => {
      if (this.source !== source) return;
      source.close();
      this.source = null;
      this.retry();
    };
  }

  retry() {
    const delay = Math.min(30, 2 ** this.attempts);
    this.attempts += 1;
    this.onStatus("down", delay);
    this.onDown();
    this.timer = setTimeout(() => this.connect(), delay * 1000);
  }

  dispatch(data, type) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (!event || typeof event !== "object") return;
    if (!event.type && type) event.type = type;
    this.onEvent(event);
  }
}
