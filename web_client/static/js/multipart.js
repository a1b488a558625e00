// multipart/related bodies (WADO-RS frames) split into parts, on bytes.

const encoder = new TextEncoder();
const decoder = new TextDecoder("latin1");

export function boundaryOf(contentType) {
  const match = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType || "");
  if (!match) throw new Error("the multipart answer names no boundary");
  return match[1] || match[2];
}

function indexOf(haystack, needle, from) {
  const first = needle[0];
  const last = haystack.length - needle.length;
  for (let i = from; i <= last; i++) {
    if (haystack[i] !== first) continue;
    let j = 1;
    while (j < needle.length && haystack[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

/** Parts as {headers: Map(lower-case name -> value), body: Uint8Array (a view, not a copy)}. */
export function splitMultipart(bytes, boundary) {
  const delimiter = encoder.encode(`--${boundary}`);
  const parts = [];
  let position = indexOf(bytes, delimiter, 0);
  if (position < 0) throw new Error("the multipart answer has no part");
  for (;;) {
    position += delimiter.length;
    if (bytes[position] === 0x2d && bytes[position + 1] === 0x2d) break; // closing "--"
    const headerEnd = indexOf(bytes, encoder.encode("\r\n\r\n"), position);
    if (headerEnd < 0) throw new Error("a multipart part has no header end");
    const headers = new Map();
    for (const line of decoder.decode(bytes.subarray(position, headerEnd)).split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const start = headerEnd + 4;
    const length = Number(headers.get("content-length"));
    let end;
    if (Number.isInteger(length) && length >= 0 && start + length <= bytes.length) {
      end = start + length; // jump straight over the body (an 8 MB frame is not scanned)
      position = indexOf(bytes, delimiter, end);
    } else {
      position = indexOf(bytes, encoder.encode(`\r\n--${boundary}`), start);
      end = position;
      if (position >= 0) position += 2;
    }
    if (position < 0) throw new Error("a multipart part is cut short");
    parts.push({ headers, body: bytes.subarray(start, end) });
  }
  return parts;
}
