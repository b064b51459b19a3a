/**
 * Where a webhook may be delivered. A job names any URL; the service POSTs to it from inside the operator's
 * network, so a URL that resolves to loopback, link-local (cloud metadata at 169.254.169.254), private,
 * unique-local, multicast, unspecified or any other non-global range would let a tenant reach Redis or an
 * internal service (SSRF). Only global unicast addresses are allowed, unless the operator's allow-list
 * (`QAAS_WEBHOOK_ALLOW`: addresses, CIDR ranges or host names) names them.
 *
 * Ranges are classified with ipaddr.js (the library Express's proxy-addr trusts for the same question)
 * rather than hand-written parsing: IPv4-mapped IPv6, NAT64, 6to4 and Teredo forms and the IANA special
 * ranges are easy to miss by hand. Decimal and hex hosts (`2130706433`, `0x7f000001`) need no parsing here:
 * the WHATWG URL parser already turns them into `127.0.0.1`.
 */
import ipaddr from 'ipaddr.js';

export interface WebhookAllowList {
  /** Lower-case host names whose every address is allowed. */
  hosts: string[];
  /** Address ranges allowed even though they are not global unicast. */
  ranges: [ipaddr.IPv4 | ipaddr.IPv6, number][];
}

export const emptyAllowList: WebhookAllowList = { hosts: [], ranges: [] };

/** `127.0.0.1, 10.0.0.0/8, ::1, hooks.internal` → an allow-list; throws RangeError naming a bad entry. */
export function parseAllowList(raw: string | undefined): WebhookAllowList {
  const list: WebhookAllowList = { hosts: [], ranges: [] };
  for (const entry of (raw ?? '').split(',').map((e) => e.trim().toLowerCase())) {
    if (!entry) continue;
    if (entry.includes('/')) {
      if (!ipaddr.isValidCIDR(entry)) throw new RangeError(`"${entry}" is not an address range (CIDR)`);
      const [address, bits] = ipaddr.parseCIDR(entry);
      list.ranges.push([normalised(address), address.kind() === 'ipv6' && isMapped(address) ? bits - 96 : bits]);
    } else if (ipaddr.isValid(entry)) {
      const address = ipaddr.process(entry);
      list.ranges.push([address, address.kind() === 'ipv4' ? 32 : 128]);
    } else if (/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(entry)) {
      list.hosts.push(entry);
    } else {
      throw new RangeError(`"${entry}" is neither an address, an address range nor a host name`);
    }
  }
  return list;
}

function isMapped(address: ipaddr.IPv4 | ipaddr.IPv6): boolean {
  return address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress();
}

function normalised(address: ipaddr.IPv4 | ipaddr.IPv6): ipaddr.IPv4 | ipaddr.IPv6 {
  return isMapped(address) ? (address as ipaddr.IPv6).toIPv4Address() : address;
}

/** The URL's host without IPv6 brackets, lower-case. */
export function urlHost(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
}

export function isAllowedHost(host: string, allow: WebhookAllowList): boolean {
  return allow.hosts.includes(host.toLowerCase());
}

/**
 * Why `address` (an IP literal) may not receive webhooks, or null when it may: global unicast, or inside
 * an allow-listed range. IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
 */
export function addressRefusal(address: string, allow: WebhookAllowList): string | null {
  if (!ipaddr.isValid(address)) return `${address} is not an IP address`;
  const parsed = ipaddr.process(address);
  if (allow.ranges.some(([range, bits]) => range.kind() === parsed.kind() && parsed.match(range, bits))) return null;
  const range = parsed.range();
  if (range === 'unicast') return null;
  return `${address} is a ${range} address (only global unicast addresses receive webhooks unless QAAS_WEBHOOK_ALLOW names them)`;
}

/**
 * Why `url` may not receive webhooks, judged from the URL alone: a scheme other than http(s), or a host
 * that is an IP literal outside what addressRefusal allows. Host names are judged when they are resolved,
 * at delivery (a name may point elsewhere by then).
 */
export function urlRefusal(url: string, allow: WebhookAllowList): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${url} is not a URL`;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return `${parsed.protocol} URLs are not delivered`;
  const host = urlHost(parsed);
  if (isAllowedHost(host, allow)) return null;
  return ipaddr.isValid(host) ? addressRefusal(host, allow) : null;
}
