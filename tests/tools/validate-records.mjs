// validate-records.mjs SCHEMA.json RECORDS.jsonl [--min N] [--status-api]
// Validates every line of RECORDS.jsonl (one JSON record per line) against
// a JSON Schema (draft 2020-12) with ajv in strict mode. Exit 0 when all are
// valid and there are at least N; 1 otherwise (each failure is printed with
// its line number; values are not printed, records may hold codes).
import { readFileSync } from 'node:fs';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { parse as parseYaml } from 'yaml';

const [schemaPath, recordsPath, ...rest] = process.argv.slice(2);
if (!schemaPath || !recordsPath) {
  console.error('usage: validate-records.mjs SCHEMA.json RECORDS.jsonl [--min N]');
  process.exit(2);
}
const min = rest[0] === '--min' ? Number(rest[1]) : 1;
const ajv = new Ajv2020({ strict: true, strictRequired: false, allErrors: true });
addFormats(ajv);
// SCHEMA may also be an OpenAPI document and a component name:
// schemas/openapi.yaml#StatusDocument (OpenAPI 3.1 schemas are JSON Schema).
let schema;
if (schemaPath.includes('.yaml#')) {
  const [file, name] = schemaPath.split('#');
  const doc = parseYaml(readFileSync(file, 'utf8'));
  schema = {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: `https://oauthq.dev/openapi/${name}.json`,
    ...doc.components.schemas[name],
  };
} else {
  schema = JSON.parse(readFileSync(schemaPath, 'utf8'));
}
if (rest.includes('--status-api')) {
  // The status API serves the status.v1 record without its "schema" field;
  // before the worker wrote anything it serves version 0 with provider null.
  delete schema.properties.schema;
  schema.required = schema.required.filter((k) => k !== 'schema');
  schema.properties.provider = { type: ['string', 'null'], maxLength: 32 };
  schema.properties.version = { type: 'integer', minimum: 0 };
  // The public document never carries the platform's metadata (SPEC §4a).
  for (const k of ['end_user', 'organization', 'tags']) delete schema.properties[k];
  schema.$id = schema.$id.replace('.json', '.api.json');
}
const validate = ajv.compile(schema);
const lines = readFileSync(recordsPath, 'utf8').split('\n').filter((l) => l.trim() !== '');
let bad = 0;
lines.forEach((line, i) => {
  let rec;
  try {
    rec = JSON.parse(line);
  } catch {
    bad++;
    console.error(`line ${i + 1}: not JSON`);
    return;
  }
  if (!validate(rec)) {
    bad++;
    const why = validate.errors.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ');
    console.error(`line ${i + 1}: ${why}`);
  }
});
console.log(`${schemaPath}: ${lines.length - bad} valid, ${bad} invalid (need >= ${min})`);
process.exit(bad === 0 && lines.length >= min ? 0 : 1);
