/**
 * API keys the pages use, kept in this tab's session storage (gone when the
 * tab closes), never in a URL or in local storage. The playground's key and
 * the inspector's admin key are kept apart.
 */

export type KeyName = "runnel.apiKey" | "runnel.adminKey";

export function storedKey(name: KeyName): string | undefined {
  try {
    return sessionStorage.getItem(name) ?? undefined;
  } catch {
    return undefined;
  }
}

export function storeKey(name: KeyName, key: string | undefined): void {
  try {
    if (key) sessionStorage.setItem(name, key);
    else sessionStorage.removeItem(name);
  } catch {
    // Storage refused (a private mode): the key lasts as long as the page.
  }
}
