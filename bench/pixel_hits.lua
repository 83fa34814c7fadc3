-- wrk script for bench/pixel_bench.py: browser-like GET /p.gif requests.
--
-- Usage: wrk ... -s bench/pixel_hits.lua URL -- SITE_ID [SEED]
--
-- Each thread builds a pool of requests in init(). Each has a query string of about 300 bytes:
-- site id, page URL on localhost with a varying path and sometimes UTM parameters, referrer,
-- title, screen size and language. Browser headers with a rotating User-Agent follow. Every
-- request gets a fresh random cache-buster, so request lines rarely repeat. The pool keeps
-- string building out of request(), which matters because one wrk thread also has to keep up
-- with nginx.
--
-- done() prints one line, "PIXEL_BENCH_RESULT {json}", that pixel_bench.py parses.

local POOL_SIZE = 4096

local user_agents = {
  -- Chrome, desktop
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
  -- Edge and Opera, desktop
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36 Edg/123.0.2420.97",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36 OPR/109.0.0.0",
  -- Firefox, desktop
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Firefox/115.0",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0",
  "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
  "Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0",
  -- Safari, desktop
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Safari/605.1.15",
  -- iPhone and iPad
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 16_7_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.71 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 327.0.0.33.120",
  "Mozilla/5.0 (iPad; CPU OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
  -- Android
  "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.118 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 12; moto g(60)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.119 Mobile Safari/537.36",
  "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
  "Mozilla/5.0 (Linux; Android 13; 2201117TG) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 11; SM-A125F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
}

local sections = { "blog", "docs", "pricing", "products", "guides", "news", "help", "about" }
local slugs = {
  "getting-started", "release-notes-2024", "how-we-measure-conversions", "self-hosting-checklist",
  "privacy-by-default", "comparing-plans", "install-on-debian", "faster-page-loads",
  "team-accounts", "export-your-data", "dashboard-tour", "api-reference",
}
local titles = {
  "Getting started | Example", "Release notes 2024 - Example Blog", "Pricing - Example",
  "How we measure conversions without cookies", "Self-hosting checklist | Example Docs",
  "Install on Debian 12 | Example Docs", "Dashboard tour", "Example - Privacy-friendly analytics",
}
local referrers = {
  "", "", "", "https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/",
  "https://news.ycombinator.com/item?id=40012345", "https://t.co/a1B2c3D4e5",
  "https://www.reddit.com/r/selfhosted/comments/1c2d3e4/", "http://localhost/blog/",
}
local campaigns = {
  "utm_source=newsletter&utm_medium=email&utm_campaign=spring_launch",
  "utm_source=twitter&utm_medium=social&utm_campaign=release_2024",
  "utm_source=google&utm_medium=cpc&utm_campaign=brand&utm_term=analytics",
}
local screens = { "1920x1080", "1536x864", "2560x1440", "390x844", "412x915", "1440x900" }
local languages = { "en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR" }

-- Percent-encode everything outside RFC 3986's unreserved set.
local function encode(text)
  return (text:gsub("[^%w%-%._~]", function(char)
    return string.format("%%%02X", string.byte(char))
  end))
end

local function pick(list)
  return list[math.random(#list)]
end

local thread_count = 0

-- setup() runs in the main Lua state once per thread. It gives each thread its own seed offset.
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

local prefixes = {}
local suffixes = {}
local next_index = 1
local site_id = ""

function init(args)
  site_id = args[1] or error("pass the site id after --: wrk ... -- SITE_ID [SEED]")
  local seed = tonumber(args[2] or "1")
  math.randomseed(seed * 1000 + (thread_number or 1))
  local host = wrk.headers["Host"]
  for i = 1, POOL_SIZE do
    local page = "http://localhost/" .. pick(sections) .. "/" .. pick(slugs)
    if math.random() < 0.25 then
      page = page .. "?" .. pick(campaigns)
    end
    local query = "s=" .. encode(site_id)
      .. "&u=" .. encode(page)
      .. "&r=" .. encode(pick(referrers))
      .. "&t=" .. encode(pick(titles))
      .. "&sr=" .. pick(screens)
      .. "&l=" .. pick(languages)
    prefixes[i] = "GET /p.gif?" .. query .. "&_="
    suffixes[i] = " HTTP/1.1\r\n"
      .. "Host: " .. host .. "\r\n"
      .. "User-Agent: " .. pick(user_agents) .. "\r\n"
      .. "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8\r\n"
      .. "Accept-Encoding: gzip, deflate, br\r\n"
      .. "Accept-Language: en-US,en;q=0.9\r\n"
      .. "Referer: " .. page .. "\r\n"
      .. "\r\n"
  end
end

function request()
  local i = next_index
  next_index = i % POOL_SIZE + 1
  return prefixes[i] .. math.random(100000000, 999999999) .. suffixes[i]
end

-- wrk counts a response in summary.errors.status when its status is above 399. Neither
-- benchmarked server sends 1xx or 3xx on /p.gif, so this is the count of non-2xx responses.
function done(summary, latency, requests)
  local function us(p)
    return latency:percentile(p)
  end
  io.write(string.format(
    'PIXEL_BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"non_2xx": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, '
      .. '"timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    us(50), us(90), us(99), latency.max, latency.mean))
end
