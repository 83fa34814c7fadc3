/*
 * trackpixel browser snippet, served by the collector at GET /t.js.
 * scripts/build-snippet.sh minifies this file into t.min.js, which the collector serves when present.
 *
 * Install tag:
 *   <script>window.trackpixel=window.trackpixel||function(){(trackpixel.q=trackpixel.q||[]).push(arguments)};</script>
 *   <script async src="https://COLLECTOR/t.js" data-site="SITE_ID"></script>
 *
 * The first line queues calls in trackpixel.q until this file loads. On load the snippet applies
 * queued 'consent' commands, sends the automatic page view, then replays the other queued calls
 * in order and replaces window.trackpixel with the real function.
 *
 * Tag attributes:
 *   data-site             site id (required: without it the snippet does nothing)
 *   data-auto="false"     no automatic page views, neither on load nor on history navigation
 *   data-cookies="false"  no _tp_vid cookie and no visitor id
 *
 * Commands:
 *   trackpixel('track', name, props?, options?)  props.value -> v, props.currency -> cur, other
 *       string/number/boolean props -> p; options.eventId -> id (else a random id)
 *   trackpixel('page')                           a page_view event
 *   trackpixel('consent', 'default'|'update', {analytics_storage, ad_storage, ad_user_data,
 *       ad_personalization})                     values 'granted' or 'denied'; the latest state is
 *       sent with every body, and analytics_storage 'denied' turns the visitor cookie off
 *
 * Forms: <form data-trackpixel-form="Lead Form"> sends "Lead Form Started" on the first input or
 * change inside it and "Lead Form Submitted" on submit. With an empty attribute the names are
 * form_started/form_submitted with p.form = the form's id or name. data-trackpixel-started and
 * data-trackpixel-submitted override the names. Field values are never read.
 *
 * Transport: POST <script origin>/e with a text/plain JSON body
 *   {"s": site, "vid"?: id, "consent"?: {...}, "events": [{"e","u","r","t","id","ts","v"?,"cur"?,"p"?}]}
 * by navigator.sendBeacon, or fetch with keepalive when sendBeacon is missing or returns false.
 * Events are batched for 20 ms, and flushed at once on pagehide, on visibilitychange to hidden
 * and on a tracked form's submit.
 */
(function (w, d) {
  'use strict';
  var MAX_EVENTS = 50;           // max events per body
  var MAX_BODY = 60000;          // max bytes per body, below the Fetch Standard's 64 KiB keepalive limit
  var COOKIE = '_tp_vid';
  var MAX_URL = 2048;            // the processor shortens longer u and r (MAX_URL in trackpixel/pipeline/fields.py)
  var MAX_TITLE = 500;           // the processor cuts a longer t (MAX_TITLE there)
  var CONSENT_KEYS = ['analytics_storage', 'ad_storage', 'ad_user_data', 'ad_personalization'];

  var loc = w.location;
  var stub = w.trackpixel;
  var tag = d.currentScript || d.querySelector('script[src*="/t.js"][data-site]');
  var site = tag && tag.getAttribute('data-site');
  // A second copy of the snippet on the same page leaves the first one in charge.
  if (!site || (stub && stub.tp)) return;

  var endpoint = '';             // set on start, because new URL() throws on an invalid src
  var autoPages = tag.getAttribute('data-auto') != 'false';
  var cookies = tag.getAttribute('data-cookies') != 'false';

  var queue = [];
  var timer = 0;
  var consent = null;
  var visitor = '';
  var referrer = d.referrer;     // referrer of the current page; the previous page URL after a history navigation
  var pageUrl = '';              // URL of the last page view
  var pageKey = '';              // pathname + search of the last page view
  var startedForms = [];

  // Wrap a callback so that an error in the snippet never reaches the host page.
  function guard(fn) {
    return function () {
      try {
        return fn.apply(this, arguments);
      } catch (e) {}
    };
  }

  function randomId() {
    var c = w.crypto;
    var bytes = new Uint8Array(16);
    var hex = '';
    var i;
    if (c && c.randomUUID) return c.randomUUID();  // only in secure contexts (https, localhost)
    if (c && c.getRandomValues) c.getRandomValues(bytes);
    else for (i = 0; i < 16; i++) bytes[i] = Math.random() * 256;
    for (i = 0; i < 16; i++) hex += (256 + bytes[i]).toString(16).slice(1);
    return hex;
  }

  // Return the visitor id from the _tp_vid cookie, creating the cookie when it is missing.
  // Return '' when cookies are off, analytics consent is denied, or the browser refuses the cookie.
  function visitorId() {
    if (!cookies || (consent && consent.analytics_storage == 'denied')) return '';
    if (!visitor) {
      var found = d.cookie.match(/(?:^|;\s*)_tp_vid=([\w-]{8,64})/);
      visitor = found ? found[1] : randomId();
      d.cookie = COOKIE + '=' + visitor + ';path=/;max-age=31536000;SameSite=Lax' +
        (loc.protocol == 'https:' ? ';Secure' : '');
      // Read the cookie back so that a blocked cookie does not become a new visitor on every page.
      if (d.cookie.indexOf(COOKIE + '=' + visitor) < 0) visitor = '';
    }
    return visitor;
  }

  // Shorten a URL to MAX_URL characters as the processor's fit_url does: drop the fragment, then
  // every query parameter that would pass the limit, whole, so no kept parameter (a UTM tag, a
  // click id) is cut inside its value.
  function fitUrl(url) {
    if (url.length <= MAX_URL) return url;
    url = url.split('#')[0];
    if (url.length <= MAX_URL) return url;
    var at = url.indexOf('?');
    if (at < 0 || at >= MAX_URL) return url.slice(0, MAX_URL);
    var kept = url.slice(0, at + 1);
    var pairs = url.slice(at + 1).split('&');
    for (var i = 0; i < pairs.length; i++) {
      var next = kept + (kept.length > at + 1 ? '&' : '') + pairs[i];
      if (pairs[i] && next.length <= MAX_URL) kept = next;
    }
    return kept.length > at + 1 ? kept : kept.slice(0, at);
  }

  function post(body, keepalive) {
    return fetch(endpoint, {
      method: 'POST', body: body, keepalive: keepalive, mode: 'no-cors', credentials: 'omit',
      headers: { 'Content-Type': 'text/plain' }
    });
  }

  function send(body) {
    var nav = w.navigator;
    try {
      if (nav.sendBeacon && nav.sendBeacon(endpoint, body)) return;
    } catch (e) {}
    // sendBeacon and keepalive fetch share the Fetch Standard's 64 KiB limit on in-flight bytes, so
    // a burst over it is retried as a plain fetch, which works while the page stays open.
    if (w.fetch) {
      post(body, true).catch(function () {
        post(body, false).catch(function () {});
      });
    }
  }

  function bodyFor(events) {
    var body = { s: site, events: events };
    var vid = visitorId();
    if (vid) body.vid = vid;
    if (consent) body.consent = consent;
    return JSON.stringify(body);
  }

  // Send every queued event, splitting them into bodies of at most MAX_EVENTS events and MAX_BODY bytes.
  function flush() {
    clearTimeout(timer);
    timer = 0;
    while (queue.length) {
      var count = Math.min(queue.length, MAX_EVENTS);
      var body = bodyFor(queue.slice(0, count));
      while (count > 1 && new Blob([body]).size > MAX_BODY) {
        count = count >> 1;
        body = bodyFor(queue.slice(0, count));
      }
      queue.splice(0, count);
      // A single event whose body exceeds MAX_BODY is dropped instead of being sent over the limit.
      if (new Blob([body]).size <= MAX_BODY) send(body);
    }
  }

  function track(name, props, options) {
    if (!name) return;
    var event = {
      e: String(name), u: fitUrl(loc.href), r: fitUrl(referrer),
      t: d.title.slice(0, MAX_TITLE),
      id: options && options.eventId ? String(options.eventId) : randomId(),
      ts: Date.now()
    };
    var custom = {};
    var hasCustom = false;
    if (typeof props != 'object') props = null;
    for (var key in props) {
      var value = props[key];
      var type = typeof value;
      if (key == 'value') {
        if (type == 'string' && value) value = +value;  // '250' counts, '' and null do not
        if (typeof value == 'number' && isFinite(value)) event.v = value;
      } else if (key == 'currency') {
        if (value) event.cur = String(value).toUpperCase();
      } else if (type == 'string' || type == 'boolean' || (type == 'number' && isFinite(value))) {
        custom[key] = value;
        hasCustom = true;
      }
    }
    if (hasCustom) event.p = custom;
    queue.push(event);
    if (!timer) timer = setTimeout(guard(flush), 20);
  }

  function page() {
    if (pageUrl) referrer = pageUrl;
    pageUrl = loc.href;
    pageKey = loc.pathname + loc.search;
    track('page_view');
  }

  // 'default' and 'update' both merge the given keys into the current consent state.
  function setConsent(state) {
    consent = consent || {};
    for (var i = 0; i < CONSENT_KEYS.length; i++) {
      var value = state && state[CONSENT_KEYS[i]];
      if (value == 'granted' || value == 'denied') consent[CONSENT_KEYS[i]] = value;
    }
    // Withdrawn analytics consent: forget the visitor id and delete its cookie.
    if (consent.analytics_storage == 'denied') {
      visitor = '';
      d.cookie = COOKIE + '=;path=/;max-age=0';
    }
  }

  var api = guard(function (command, a, b, c) {
    if (command == 'track') track(a, b, c);
    else if (command == 'page') page();
    else if (command == 'consent') setConsent(b);
  });
  api.tp = 1;

  // History navigation: runs after the router's pushState/replaceState or a popstate, and sends a
  // page view only when the path or query changed, so hash changes and repeated states send none.
  var checkNavigation = guard(function () {
    if (loc.pathname + loc.search != pageKey) page();
  });

  function onNavigation() {
    // The check waits one task so that a redirect through several states sends one page view.
    setTimeout(checkNavigation, 0);
  }

  function trackedForm(target) {
    var form = target && (target.form || (target.closest && target.closest('form')));
    return form && form.hasAttribute('data-trackpixel-form') ? form : null;
  }

  function trackForm(form, step) {
    var label = form.getAttribute('data-trackpixel-form');
    // getAttribute, because a field named "id" or "name" shadows form.id and form.name.
    var formId = form.getAttribute('id') || form.getAttribute('name');
    var name = form.getAttribute('data-trackpixel-' + step.toLowerCase()) ||
      (label ? label + ' ' + step : 'form_' + step.toLowerCase());
    track(name, !label && formId ? { form: formId } : null);
  }

  var onFormInput = guard(function (event) {
    var form = trackedForm(event.target);
    if (form && startedForms.indexOf(form) < 0) {
      startedForms.push(form);
      trackForm(form, 'Started');
    }
  });

  var onFormSubmit = guard(function (event) {
    var form = event.target;
    if (form && form.hasAttribute && form.hasAttribute('data-trackpixel-form')) {
      trackForm(form, 'Submitted');
      flush();  // the submit may navigate away before the batch timer fires
    }
  });

  var onHide = guard(function () {
    if (d.visibilityState == 'hidden') flush();
  });

  guard(function () {
    var pending = (stub && stub.q) || [];
    var i;
    endpoint = new URL(tag.src, loc.href).origin + '/e';
    w.trackpixel = api;

    for (i = 0; i < pending.length; i++) {
      if (pending[i][0] == 'consent') api.apply(null, pending[i]);
    }
    if (autoPages) {
      page();
      var history = w.history;
      ['pushState', 'replaceState'].forEach(function (method) {
        var original = history[method];
        history[method] = function () {
          var result = original.apply(this, arguments);
          onNavigation();
          return result;
        };
      });
      w.addEventListener('popstate', onNavigation);
    }
    for (i = 0; i < pending.length; i++) {
      if (pending[i][0] != 'consent') api.apply(null, pending[i]);
    }

    d.addEventListener('input', onFormInput, true);
    d.addEventListener('change', onFormInput, true);
    d.addEventListener('submit', onFormSubmit, true);
    d.addEventListener('visibilitychange', onHide);
    w.addEventListener('pagehide', guard(flush));
  })();
})(window, document);
