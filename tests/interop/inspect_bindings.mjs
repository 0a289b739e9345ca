// Inspect the hand-written bindings through the SDK itself (no server needed).
//
//   node inspect_bindings.mjs schema
//     prints REMOTE_MODULE as JSON: cli version; per table its wire name, accessor, event flag and
//     columns (wire name, key, SATS type name, primary key) in row order; per reducer its name,
//     accessor and params (key, SATS type name) in argument order.
//   node inspect_bindings.mjs roundtrip < {"rows": [{"table", "hex"}], "args": [{"reducer", "hex"}]}
//     decodes each BSATN blob with the SDK's own deserializer for that table row / reducer params,
//     re-encodes it with the SDK's serializer and prints {"rows": [{"value", "hex"}], "args": [...]}
//     (rows keyed by wire column name, args as a list in order).
//
// SATS type names follow spec.values.sats_name: String, U32, U64, I64, Bool, Identity, Timestamp,
// Option<T>, Vec<T>; anything else is printed as "?<tag>" so the comparison fails loudly.

import { BinaryReader, BinaryWriter, ProductType } from "spacetimedb";
import { REMOTE_MODULE } from "./bindings/index.js";
import { rowToJson, toJson, wireColumns } from "./wire_json.mjs";

const PRIMS = { String: "String", U32: "U32", U64: "U64", I64: "I64", Bool: "Bool" };

function satsName(ty) {
  if (ty.tag in PRIMS) return PRIMS[ty.tag];
  if (ty.tag === "Array") return `Vec<${satsName(ty.value)}>`;
  if (ty.tag === "Product") {
    const names = ty.value.elements.map((e) => e.name);
    if (names.length === 1 && names[0] === "__identity__") return "Identity";
    if (names.length === 1 && names[0] === "__timestamp_micros_since_unix_epoch__") return "Timestamp";
  }
  if (ty.tag === "Sum") {
    const v = ty.value.variants;
    if (v.length === 2 && v[0].name === "some" && v[1].name === "none") return `Option<${satsName(v[0].algebraicType)}>`;
  }
  return `?${ty.tag}`;
}

function schema() {
  const tables = Object.values(REMOTE_MODULE.tables).map((t) => ({
    name: t.sourceName,
    accessor: t.accessorName,
    event: t.isEvent === true,
    columns: wireColumns(t).map(({ key, name }) => ({
      name,
      key,
      type: satsName(t.columns[key].typeBuilder.algebraicType),
      primary_key: t.columns[key].columnMetadata.isPrimaryKey === true,
    })),
    // The row type the SDK decodes with must list the same columns in the same order.
    row_type_keys: t.rowType.elements.map((e) => e.name),
  }));
  const reducers = REMOTE_MODULE.reducers.map((r) => ({
    name: r.name,
    accessor: r.accessorName,
    params: r.paramsType.elements.map((e) => ({ key: e.name, type: satsName(e.algebraicType) })),
  }));
  return { cli_version: REMOTE_MODULE.versionInfo.cliVersion, tables, reducers };
}

function roundtrip(blob, productType) {
  const bytes = Buffer.from(blob, "hex");
  const reader = new BinaryReader(new Uint8Array(bytes));
  const value = ProductType.makeDeserializer(productType)(reader);
  if (reader.remaining !== 0) throw new Error(`${reader.remaining} trailing bytes`);
  const writer = new BinaryWriter(64);
  ProductType.makeSerializer(productType)(writer, value);
  return { value, hex: Buffer.from(writer.getBuffer()).toString("hex") };
}

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const mode = process.argv[2];
if (mode === "schema") {
  process.stdout.write(JSON.stringify(schema()) + "\n");
} else if (mode === "roundtrip") {
  const input = await readStdin();
  const byName = Object.fromEntries(Object.values(REMOTE_MODULE.tables).map((t) => [t.sourceName, t]));
  const reducerByName = Object.fromEntries(REMOTE_MODULE.reducers.map((r) => [r.name, r]));
  const rows = input.rows.map(({ table, hex }) => {
    const t = byName[table];
    const { value, hex: again } = roundtrip(hex, t.rowType);
    return { value: rowToJson(t, value), hex: again };
  });
  const args = input.args.map(({ reducer, hex }) => {
    const r = reducerByName[reducer];
    const { value, hex: again } = roundtrip(hex, r.paramsType);
    return { value: r.paramsType.elements.map((e) => toJson(value[e.name])), hex: again };
  });
  process.stdout.write(JSON.stringify({ rows, args }) + "\n");
} else {
  process.stderr.write("usage: node inspect_bindings.mjs schema|roundtrip\n");
  process.exit(2);
}
