// The attention registry: every entry builds the implementation it names,
// and the lists derived from it agree with the table.
#include <gtest/gtest.h>

#include <set>

#include "ops/attention_registry.h"

namespace sparta {

TEST(AttentionRegistry, EveryEntryBuildsTheImplementationItNames) {
  std::set<std::string> seen;
  for (const AttentionImpl& impl : attention_registry()) {
    EXPECT_TRUE(seen.insert(std::string(impl.name)).second) << "registered twice: " << impl.name;
    EXPECT_FALSE(impl.description.empty()) << impl.name;
    EXPECT_EQ(impl.make(DsaConfig{})->name(), impl.name);
    EXPECT_EQ(find_attention(impl.name), &impl);
  }
  EXPECT_EQ(find_attention("flash"), nullptr);
}

TEST(AttentionRegistry, NameListsFollowTheTable) {
  EXPECT_EQ(attention_names(), (std::vector<std::string>{"dense", "window", "dsa"}));
  EXPECT_EQ(attention_names_text(), "dense, window, dsa");
  const std::string help = attention_descriptions_text();
  for (const AttentionImpl& impl : attention_registry())
    EXPECT_NE(help.find(cat("  ", impl.name, " ")), std::string::npos) << help;
}

}  // namespace sparta
