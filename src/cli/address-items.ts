/**
 * Items keyed by `email_address` (the rules and blocklist tables), read and written the way an admin tool
 * shares a table with other writers (a self-service UI): changes are UpdateItem on the attributes the command
 * owns, so attributes it does not know survive, and a list is replaced only if nobody changed it in between.
 */
import {
  DeleteCommand,
  GetCommand,
  ScanCommand,
  UpdateCommand,
  type DynamoDBDocumentClient,
} from '@aws-sdk/lib-dynamodb';

import { awsError, awsErrorName } from '../errors.ts';
import { UsageError } from './exit.ts';

export type AddressItem = Record<string, unknown> & { email_address: string };

/** Scans stop here; an admin listing more than this wants a filter, not a screenful. */
export const MAX_LISTED_ITEMS = 10_000;
/** Attempts of a read-modify-write that lost a race with another writer. */
const WRITE_ATTEMPTS = 3;

export async function getAddressItem(
  ddb: DynamoDBDocumentClient,
  table: string,
  address: string,
): Promise<AddressItem | undefined> {
  try {
    const { Item } = await ddb.send(
      new GetCommand({ TableName: table, Key: { email_address: address }, ConsistentRead: true }),
    );
    return Item as AddressItem | undefined;
  } catch (error) {
    throw awsError('DYNAMODB_ERROR', `GetItem ${table}`, error);
  }
}

export type ItemChange = Record<string, unknown>;

export interface ListEdit {
  /** The list attribute (`forwards`, `blocked_patterns`). */
  attribute: string;
  add: readonly string[];
  remove: readonly string[];
  /** Largest list accepted after the edit. */
  maxLength: number;
  /** Plain attributes to set with the edit (e.g. `ooo_active`), computed from the item as read. */
  set?: (current: AddressItem | undefined) => ItemChange;
}

export interface ListEditResult {
  before: AddressItem | undefined;
  after: AddressItem;
  /** Entries asked to be added that were there already, and asked to be removed that were not. */
  alreadyThere: string[];
  notThere: string[];
}

/**
 * Edits a list attribute in place, safely against other writers: removals are `REMOVE list[i]` guarded by
 * `list[i] = value`, additions `list_append` guarded by `NOT contains(list, value)`, so a concurrent change makes
 * the write fail and the edit is read and applied again (a whole-list comparison is not something every
 * DynamoDB implementation supports: dynalite does not).
 */
export async function editAddressList(
  ddb: DynamoDBDocumentClient,
  table: string,
  address: string,
  edit: ListEdit,
): Promise<ListEditResult> {
  for (let attempt = 1; ; attempt++) {
    const before = await getAddressItem(ddb, table, address);
    const stored = stringList(before?.[edit.attribute]);
    const removeAt = stored.flatMap((value, index) => (edit.remove.includes(value) ? [index] : []));
    const kept = stored.filter((value) => !edit.remove.includes(value));
    const adds = [...new Set(edit.add)].filter((value) => !kept.includes(value));
    if (kept.length + adds.length > edit.maxLength) {
      throw new UsageError(`at most ${edit.maxLength} entries in ${edit.attribute}`);
    }
    const change = edit.set?.(before) ?? {};
    const result: ListEditResult = {
      before,
      after: { ...before, ...change, email_address: address, [edit.attribute]: [...kept, ...adds] },
      alreadyThere: edit.add.filter((value) => kept.includes(value)),
      notThere: edit.remove.filter((value) => !stored.includes(value)),
    };
    // The list is created empty only on an item that is being written anyway: removing from nothing writes nothing.
    const createList =
      before?.[edit.attribute] === undefined && (adds.length > 0 || Object.keys(change).length > 0);
    try {
      await update(ddb, table, address, setExpression(change, edit.attribute, createList));
      if (removeAt.length > 0)
        await update(ddb, table, address, removeExpression(edit.attribute, removeAt, stored));
      if (adds.length > 0) await update(ddb, table, address, appendExpression(edit.attribute, adds));
      return result;
    } catch (error) {
      if (awsErrorName(error) === 'ConditionalCheckFailedException' && attempt < WRITE_ATTEMPTS) continue;
      throw awsError('DYNAMODB_ERROR', `UpdateItem ${table}`, error);
    }
  }
}

interface Expression {
  update: string;
  condition?: string;
  names: Record<string, string>;
  values: Record<string, unknown>;
}

/** The plain attributes, and the list created empty when the item has none. */
function setExpression(change: ItemChange, list: string, createList: boolean): Expression {
  const names: Record<string, string> = {};
  const values: Record<string, unknown> = {};
  const sets = Object.entries(change).map(([attribute, value], i) => {
    names[`#a${i}`] = attribute;
    values[`:v${i}`] = value;
    return `#a${i} = :v${i}`;
  });
  if (createList) {
    names['#list'] = list;
    values[':empty'] = [];
    sets.push('#list = if_not_exists(#list, :empty)');
  }
  return { update: sets.length > 0 ? `SET ${sets.join(', ')}` : '', names, values };
}

function removeExpression(list: string, indexes: readonly number[], stored: readonly string[]): Expression {
  const values: Record<string, unknown> = {};
  const guards = indexes.map((index) => {
    values[`:r${index}`] = stored[index];
    return `#list[${index}] = :r${index}`;
  });
  return {
    update: `REMOVE ${indexes.map((index) => `#list[${index}]`).join(', ')}`,
    condition: guards.join(' AND '),
    names: { '#list': list },
    values,
  };
}

function appendExpression(list: string, adds: readonly string[]): Expression {
  const values: Record<string, unknown> = { ':adds': [...adds] };
  const guards = adds.map((value, i) => {
    values[`:n${i}`] = value;
    return `NOT contains(#list, :n${i})`;
  });
  return {
    update: 'SET #list = list_append(#list, :adds)',
    condition: guards.join(' AND '),
    names: { '#list': list },
    values,
  };
}

async function update(
  ddb: DynamoDBDocumentClient,
  table: string,
  address: string,
  expression: Expression,
): Promise<void> {
  if (expression.update === '') return;
  await ddb.send(
    new UpdateCommand({
      TableName: table,
      Key: { email_address: address },
      UpdateExpression: expression.update,
      ...(expression.condition && { ConditionExpression: expression.condition }),
      ExpressionAttributeNames: expression.names,
      ExpressionAttributeValues: expression.values,
    }),
  );
}

/** Deletes the item; returns what was stored, or undefined when there was nothing. */
export async function deleteAddressItem(
  ddb: DynamoDBDocumentClient,
  table: string,
  address: string,
): Promise<AddressItem | undefined> {
  try {
    const { Attributes } = await ddb.send(
      new DeleteCommand({ TableName: table, Key: { email_address: address }, ReturnValues: 'ALL_OLD' }),
    );
    return Attributes as AddressItem | undefined;
  } catch (error) {
    throw awsError('DYNAMODB_ERROR', `DeleteItem ${table}`, error);
  }
}

/** Every item whose address is in one of `domains`, sorted by address; `truncated` past {@link MAX_LISTED_ITEMS}. */
export async function listAddressItems(
  ddb: DynamoDBDocumentClient,
  table: string,
  domains: readonly string[],
): Promise<{ items: AddressItem[]; truncated: boolean }> {
  const suffixes = domains.map((d) => `@${d}`);
  const names = { '#address': 'email_address' };
  const values = Object.fromEntries(suffixes.map((s, i) => [`:d${i}`, s]));
  const filter = suffixes.map((_s, i) => `contains(#address, :d${i})`).join(' OR ');
  const items: AddressItem[] = [];
  let start: Record<string, unknown> | undefined;
  try {
    do {
      const page = await ddb.send(
        new ScanCommand({
          TableName: table,
          FilterExpression: filter,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
          ...(start && { ExclusiveStartKey: start }),
        }),
      );
      for (const item of page.Items ?? []) {
        const address = item.email_address;
        // The filter is `contains`; the suffix decides (a@example.com.evil.test is not example.com's).
        if (typeof address === 'string' && suffixes.some((s) => address.toLowerCase().endsWith(s))) {
          items.push(item as AddressItem);
        }
      }
      start = page.LastEvaluatedKey;
    } while (start !== undefined && items.length < MAX_LISTED_ITEMS);
  } catch (error) {
    throw awsError('DYNAMODB_ERROR', `Scan ${table}`, error);
  }
  items.sort((a, b) => a.email_address.localeCompare(b.email_address));
  return {
    items: items.slice(0, MAX_LISTED_ITEMS),
    truncated: start !== undefined || items.length > MAX_LISTED_ITEMS,
  };
}

/** A stored list of strings (tolerates a string set, and drops what is not a string). */
export function stringList(value: unknown): string[] {
  const list = value instanceof Set ? [...(value as Set<unknown>)] : Array.isArray(value) ? value : [];
  return list.filter((v): v is string => typeof v === 'string' && v !== '');
}
